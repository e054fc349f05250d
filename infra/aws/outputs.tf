output "url" {
  description = "Where clients connect: wss://<this>/ws (point your DNS name at it)."
  value       = aws_lb.main.dns_name
}

output "queue_url" {
  description = "QUEUE_URL of every task (the queues' own URLs are sqs.tf's outputs)."
  value       = local.queue_url
}

output "cluster" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.main.name
}

output "gateway_service" {
  description = "ECS service of the gateways."
  value       = aws_ecs_service.gateway.name
}

output "worker_service" {
  description = "ECS service of the workers."
  value       = aws_ecs_service.worker.name
}

output "dlq_task_definition" {
  description = "Task definition family for `worker dlq list|replay|purge` runs."
  value       = aws_ecs_task_definition.dlq.family
}

output "role_arns" {
  description = "IAM roles of the tasks."
  value = {
    execution    = aws_iam_role.execution.arn
    gateway      = aws_iam_role.gateway.arn
    worker       = aws_iam_role.worker.arn
    dlq_operator = aws_iam_role.dlq_operator.arn
  }
}

output "log_groups" {
  description = "CloudWatch log groups."
  value       = local.log_groups
}
