# The SQS topology of QUEUE_URL=sqs://<name_prefix>, exactly what the processes create
# themselves when they may (queue/src/sqs/topology.rs; infra/localstack/init-queues.sh
# makes the same on LocalStack):
#
#   <prefix>-ingest.fifo  gateways -> workers. FIFO, MessageGroupId = room (per-room order,
#                         rooms in parallel), MessageDeduplicationId = SHA-256 of
#                         (room, from, id); high-throughput mode (deduplication and limits
#                         per group). RedrivePolicy: after MAX_ATTEMPTS + 5 receives SQS
#                         moves a message to the dead-letter queue by itself; normally the
#                         worker moves it at MAX_ATTEMPTS first, with its reason attached.
#   <prefix>-dead.fifo    dead letters, kept 14 days (`worker dlq list|replay|purge`).
#   <prefix>--gw-<id>     one standard queue per gateway task, created by the gateway at
#                         start and deleted at stop; tagged courier-role=gateway,
#                         courier-prefix=<prefix>, courier-heartbeat=<unix seconds>. Any
#                         process deletes those whose heartbeat is older than the gateway
#                         TTL (120 s). They are not Terraform's: tasks come and go.
#
# The tasks run with ?create=false (ecs.tf), so a missing queue stops them at start with
# its name instead of making one with other settings. QUEUE_URL=sqs://<prefix>?fifo=false
# would use standard queues <prefix>-ingest / <prefix>-dead instead (not made here).

variable "max_attempts" {
  description = "MAX_ATTEMPTS of the workers (their default is 5; keep the two equal): deliveries of a message before the worker dead-letters it. The redrive policy moves it after 5 more receives (workers that crashed holding it)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100
    error_message = "max_attempts: 1 to 100, as the worker accepts."
  }
}

locals {
  # REDRIVE_MARGIN in queue/src/sqs/topology.rs.
  max_receive_count = var.max_attempts + 5
}

resource "aws_sqs_queue" "dead" {
  #checkov:skip=CKV2_AWS_73:SSE-SQS (sqs_managed_sse_enabled) encrypts at rest without a customer key to manage; gateway queues, which the tasks create, get the same.
  name                        = "${var.name_prefix}-dead.fifo"
  fifo_queue                  = true
  content_based_deduplication = false
  message_retention_seconds   = 1209600
  visibility_timeout_seconds  = 30
  sqs_managed_sse_enabled     = true
  tags = {
    courier-role   = "dead"
    courier-prefix = var.name_prefix
  }
}

resource "aws_sqs_queue" "ingest" {
  #checkov:skip=CKV2_AWS_73:SSE-SQS (sqs_managed_sse_enabled) encrypts at rest without a customer key to manage; gateway queues, which the tasks create, get the same.
  name                        = "${var.name_prefix}-ingest.fifo"
  fifo_queue                  = true
  content_based_deduplication = false
  deduplication_scope         = "messageGroup"
  fifo_throughput_limit       = "perMessageGroupId"
  message_retention_seconds   = 345600
  # The worker extends the visibility of what it holds every 10 s; a worker that dies
  # releases its messages (and their rooms) after 30 s.
  visibility_timeout_seconds = 30
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead.arn
    maxReceiveCount     = local.max_receive_count
  })
  tags = {
    courier-role   = "ingest"
    courier-prefix = var.name_prefix
  }
}

# Only the ingest queue may use the dead-letter queue as its redrive target.
resource "aws_sqs_queue_redrive_allow_policy" "dead" {
  queue_url = aws_sqs_queue.dead.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.ingest.arn]
  })
}

output "ingest_queue_url" {
  description = "The ingest queue (KEDA's aws-sqs-queue trigger, dashboards)."
  value       = aws_sqs_queue.ingest.url
}

output "dead_letter_queue_url" {
  description = "The dead-letter queue."
  value       = aws_sqs_queue.dead.url
}
