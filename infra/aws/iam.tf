# Least privilege, from what the SQS backend (queue/src/sqs/) calls. Every role
# gets its actions on its queues only:
#
#   every process  at start: GetQueueUrl on the ingest and dead queues, GetQueueAttributes
#                  (the dead queue's ARN, the ingest redrive policy); now and then, the
#                  sweep of abandoned gateway queues: ListQueues, ListQueueTags and
#                  DeleteQueue on <prefix>--gw-*
#   gateway        publishes to the ingest queue and reads its backlog; creates, tags
#                  (heartbeat), reads and deletes its own delivery queue <prefix>--gw-<id>
#   worker         consumes the ingest queue, moves dead letters to the dead queue, and
#                  delivers to every gateway's queue (found with ListQueues by prefix)
#   dlq-operator   `worker dlq list|replay|purge`: reads and deletes dead letters, puts
#                  them back on the ingest queue (run as a one-off task, see ecs.tf)
#   execution      ECS itself: pulls the image, writes logs, reads the three secrets
#
# The tasks run with QUEUE_URL=sqs://<prefix>?create=false: the ingest and dead queues
# are Terraform's (sqs.tf), so no task may create them. Gateway queues are per task and
# all gateways share one role, so <prefix>--gw-* is as narrow as IAM can say.

locals {
  sqs_arn_base       = "arn:${data.aws_partition.current.partition}:sqs:${var.region}:${data.aws_caller_identity.current.account_id}"
  gateway_queues_arn = "${local.sqs_arn_base}:${var.name_prefix}--gw-*"
  secret_arns        = [var.database_url_secret_arn, var.api_token_secret_arn, var.jwt_secret_arn]
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # Confused-deputy guard: only tasks of this account.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# ---- execution role (ECS agent) --------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name_prefix}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution_managed" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid       = "ReadTheThreeSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns
  }
  statement {
    sid       = "DecryptThem"
    actions   = ["kms:Decrypt"]
    resources = [var.secrets_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# ---- what every process does ----------------------------------------------------------

data "aws_iam_policy_document" "common" {
  statement {
    sid       = "FindTheQueues"
    actions   = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.ingest.arn, aws_sqs_queue.dead.arn]
  }
  statement {
    sid = "ListGatewayQueues"
    # ListQueues has no resource-level permissions: "*" is the only resource it takes.
    # It returns queue URLs only (the processes ask for the <prefix>--gw- ones).
    actions   = ["sqs:ListQueues"]
    resources = ["*"]
  }
  statement {
    sid       = "SweepAbandonedGatewayQueues"
    actions   = ["sqs:ListQueueTags", "sqs:DeleteQueue"]
    resources = [local.gateway_queues_arn]
  }
}

# ---- gateway ------------------------------------------------------------------------------

data "aws_iam_policy_document" "gateway" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid = "PublishToIngest"
    # SendMessageBatch is authorized by sqs:SendMessage.
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.ingest.arn]
  }
  statement {
    sid = "OwnDeliveryQueue"
    # CreateQueue with tags also needs TagQueue; the heartbeat is a tag too.
    actions = [
      "sqs:CreateQueue",
      "sqs:TagQueue",
      "sqs:GetQueueUrl",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:DeleteQueue",
    ]
    resources = [local.gateway_queues_arn]
  }
}

resource "aws_iam_role" "gateway" {
  name               = "${var.name_prefix}-gateway"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "gateway" {
  name   = "sqs"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.gateway.json
}

# ---- worker -------------------------------------------------------------------------------

data "aws_iam_policy_document" "worker" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid = "ConsumeIngest"
    # DeleteMessageBatch and ChangeMessageVisibilityBatch are authorized by these.
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.ingest.arn]
  }
  statement {
    sid       = "DeadLetter"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead.arn]
  }
  statement {
    sid       = "DeliverToGateways"
    actions   = ["sqs:SendMessage"]
    resources = [local.gateway_queues_arn]
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name_prefix}-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "sqs"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

# ---- DLQ operator (one-off `worker dlq ...` tasks) ----------------------------------------

data "aws_iam_policy_document" "dlq_operator" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid = "InspectAndDeleteDeadLetters"
    # `purge` receives and deletes; it does not call PurgeQueue.
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.dead.arn]
  }
  statement {
    sid       = "ReplayToIngest"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.ingest.arn]
  }
}

resource "aws_iam_role" "dlq_operator" {
  name               = "${var.name_prefix}-dlq-operator"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "dlq_operator" {
  name   = "sqs-dead-letters"
  role   = aws_iam_role.dlq_operator.id
  policy = data.aws_iam_policy_document.dlq_operator.json
}
