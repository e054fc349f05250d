# Logs: LOG_FORMAT=json, one object per line, so CloudWatch Logs Insights can filter on
# fields (trace_id follows one message from gateway to worker and back). Encrypted with
# a key of our own, kept log_retention_days.

# The key policy of aws_kms_key.logs. In a key policy, Resource "*" means this key and
# nothing else; kms:* for the account root is AWS's default key policy, which lets IAM
# policies grant use of the key and keeps it manageable.
data "aws_iam_policy_document" "logs_key" {
  #checkov:skip=CKV_AWS_111:A KMS key policy: "*" is this key only (see above), and write access is limited to the account root and the CloudWatch Logs service of this account's log groups.
  #checkov:skip=CKV_AWS_356:A KMS key policy, where Resource must be "*" and means this key.
  #checkov:skip=CKV_AWS_109:A KMS key policy: the account root administering its own key is AWS's default and avoids an unmanageable key; no other principal gets permissions management.
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid = "CloudWatchLogsUsesIt"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${var.name_prefix}: CloudWatch log groups and ECS Exec sessions"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name_prefix}-logs"
  target_key_id = aws_kms_key.logs.key_id
}

locals {
  log_groups = {
    gateway = "/ecs/${var.name_prefix}/gateway"
    worker  = "/ecs/${var.name_prefix}/worker"
    dlq     = "/ecs/${var.name_prefix}/dlq"
    exec    = "/ecs/${var.name_prefix}/exec"
  }
}

resource "aws_cloudwatch_log_group" "gateway" {
  #checkov:skip=CKV_AWS_338:Operational logs carry user, room and trace ids; kept log_retention_days (30 by default) to keep personal data no longer than needed. Raise it where an audit trail is required.
  name              = local.log_groups.gateway
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_cloudwatch_log_group" "worker" {
  #checkov:skip=CKV_AWS_338:Operational logs carry user, room and trace ids; kept log_retention_days (30 by default) to keep personal data no longer than needed. Raise it where an audit trail is required.
  name              = local.log_groups.worker
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_cloudwatch_log_group" "dlq" {
  #checkov:skip=CKV_AWS_338:Output of operator runs of `worker dlq`, with message ids and rooms; same retention as the services' logs.
  name              = local.log_groups.dlq
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_cloudwatch_log_group" "exec" {
  #checkov:skip=CKV_AWS_338:ECS Exec session transcripts; same retention as the services' logs.
  name              = local.log_groups.exec
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

# WAF requires the aws-waf-logs- prefix.
resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:WAF request logs hold client IPs; same retention as the services' logs.
  name              = "aws-waf-logs-${var.name_prefix}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

# Anything on the dead-letter queue needs an operator (docs/operations.md, "Dead letters").
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name_prefix}-dead-letters"
  alarm_description   = "Messages reached ${var.name_prefix}-dead.fifo: inspect with `worker dlq list`, replay once fixed."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
}
