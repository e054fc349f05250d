#!/usr/bin/env bash
# Creates the SQS topology of QUEUE_URL=sqs://$PREFIX on LocalStack: the same queues, with
# the same attributes, that the processes create themselves (queue/src/sqs/) and
# that infra/aws/sqs.tf makes on AWS:
#
#   $PREFIX-dead.fifo    FIFO, kept 14 days
#   $PREFIX-ingest.fifo  FIFO, high-throughput mode (dedup and limits per message group),
#                        RedrivePolicy to the dead-letter queue after MAX_ATTEMPTS + 5 receives
#
# Gateway queues ($PREFIX--gw-<id>) are made by each gateway at start; nothing to do here.
# Idempotent: creating a queue that exists with the same attributes is a no-op, and a
# queue that exists with other attributes is an error (SQS says which attribute).
#
# Runs on the host (LocalStack from scripts/localstack.sh) or as a LocalStack init hook
# (infra/docker/compose.yaml mounts it into /etc/localstack/init/ready.d/). It needs only
# bash and curl: it speaks SQS's JSON protocol, which LocalStack accepts unsigned.
#
#   PREFIX         queue name prefix            (default courier)
#   MAX_ATTEMPTS   the workers' MAX_ATTEMPTS    (default 5)
#   ENDPOINT       LocalStack                   (default $AWS_ENDPOINT_URL or http://127.0.0.1:4566)
#   REGION         region                       (default $AWS_REGION or us-east-1)
set -euo pipefail

PREFIX="${PREFIX:-courier}"
MAX_ATTEMPTS="${MAX_ATTEMPTS:-5}"
ENDPOINT="${ENDPOINT:-${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}}"
REGION="${REGION:-${AWS_REGION:-us-east-1}}"
# REDRIVE_MARGIN in queue/src/sqs/topology.rs.
MAX_RECEIVES=$((MAX_ATTEMPTS + 5))

if ! [[ "$PREFIX" =~ ^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$ ]] || [ "${#PREFIX}" -gt 40 ]; then
  echo "init-queues: PREFIX must be words of [A-Za-z0-9_] joined by single hyphens, at most 40 characters" >&2
  exit 2
fi

# sqs ACTION JSON: one SQS call; prints the answer, fails with it on an error.
sqs() {
  local out status
  out="$(curl -sS -m 10 -w '\n%{http_code}' -X POST "$ENDPOINT/" \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H "X-Amz-Target: AmazonSQS.$1" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/$REGION/sqs/aws4_request, SignedHeaders=host, Signature=0" \
    --data "$2")" || { echo "init-queues: $1: SQS at $ENDPOINT does not answer" >&2; return 1; }
  status="${out##*$'\n'}"
  out="${out%$'\n'*}"
  if [ "$status" != 200 ]; then
    echo "init-queues: $1 failed ($status): $out" >&2
    return 1
  fi
  printf '%s' "$out"
}

# field NAME: the string value of "NAME" in the JSON on stdin.
field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }

create() { # NAME ROLE ATTRIBUTES-JSON
  sqs CreateQueue "{\"QueueName\":\"$1\",\"Attributes\":$3,\"tags\":{\"courier-role\":\"$2\",\"courier-prefix\":\"$PREFIX\"}}" | field QueueUrl
}

dead_url="$(create "$PREFIX-dead.fifo" dead \
  '{"FifoQueue":"true","ContentBasedDeduplication":"false","MessageRetentionPeriod":"1209600","VisibilityTimeout":"30"}')"
dead_arn="$(sqs GetQueueAttributes "{\"QueueUrl\":\"$dead_url\",\"AttributeNames\":[\"QueueArn\"]}" | field QueueArn)"
[ -n "$dead_arn" ] || { echo "init-queues: no ARN for $dead_url" >&2; exit 1; }

redrive="{\\\"deadLetterTargetArn\\\":\\\"$dead_arn\\\",\\\"maxReceiveCount\\\":$MAX_RECEIVES}"
ingest_url="$(create "$PREFIX-ingest.fifo" ingest \
  "{\"FifoQueue\":\"true\",\"ContentBasedDeduplication\":\"false\",\"MessageRetentionPeriod\":\"345600\",\"VisibilityTimeout\":\"30\",\"RedrivePolicy\":\"$redrive\",\"DeduplicationScope\":\"messageGroup\",\"FifoThroughputLimit\":\"perMessageGroupId\"}")"

echo "init-queues: $ingest_url -> $dead_url after $MAX_RECEIVES receives"
