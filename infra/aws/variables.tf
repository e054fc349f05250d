variable "region" {
  description = "AWS region of everything here."
  type        = string
  default     = "eu-west-1"
}

variable "name_prefix" {
  description = "Prefix of every name: queues are <prefix>-ingest.fifo, <prefix>-dead.fifo and <prefix>--gw-* (QUEUE_URL sqs://<prefix>)."
  type        = string
  default     = "courier"
  validation {
    # What the SQS backend accepts as a prefix: words of [A-Za-z0-9_] joined by single
    # hyphens, at most 40 characters.
    condition     = length(var.name_prefix) <= 40 && can(regex("^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$", var.name_prefix))
    error_message = "name_prefix: at most 40 characters, words of letters, digits and _ joined by single hyphens."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer and the tasks."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer (two zones or more)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks (no public IPs; reach AWS APIs through NAT or VPC endpoints)."
  type        = list(string)
}

variable "database_cidr_blocks" {
  description = "Where PostgreSQL listens (the tasks may open 5432 there only)."
  type        = list(string)
}

variable "image" {
  description = "The courier image (infra/docker/Dockerfile), e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/courier:0.1.0."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "alb_access_logs_bucket" {
  description = "Existing S3 bucket for the load balancer's access logs (its policy must let ELB write)."
  type        = string
}

variable "database_url_secret_arn" {
  description = "Secrets Manager secret holding DATABASE_URL (postgres://...)."
  type        = string
}

variable "api_token_secret_arn" {
  description = "Secrets Manager secret holding API_TOKEN (bearer token of the HTTP API)."
  type        = string
}

variable "jwt_secret_arn" {
  description = "Secrets Manager secret holding JWT_SECRET (HS256); every WebSocket client then needs a token."
  type        = string
}

variable "secrets_kms_key_arn" {
  description = "KMS key the three secrets are encrypted with (the execution role may decrypt with it)."
  type        = string
}

variable "gateway_cpu" {
  description = "Fargate CPU units of a gateway task."
  type        = number
  default     = 1024
}

variable "gateway_memory" {
  description = "Fargate memory (MiB) of a gateway task."
  type        = number
  default     = 2048
}

variable "worker_cpu" {
  description = "Fargate CPU units of a worker task."
  type        = number
  default     = 512
}

variable "worker_memory" {
  description = "Fargate memory (MiB) of a worker task."
  type        = number
  default     = 1024
}

variable "gateway_min" {
  description = "Fewest gateways (two zones: two at least)."
  type        = number
  default     = 2
}

variable "gateway_max" {
  description = "Most gateways."
  type        = number
  default     = 20
}

variable "gateway_cpu_target" {
  description = "Average CPU (%) the gateways are scaled to."
  type        = number
  default     = 60
}

variable "worker_min" {
  description = "Fewest workers."
  type        = number
  default     = 2
}

variable "worker_max" {
  description = "Most workers."
  type        = number
  default     = 20
}

variable "worker_backlog_per_task" {
  description = "Ingest messages (visible + in flight) per worker the scaling aims at: about four batches of BATCH_SIZE."
  type        = number
  default     = 400
}

variable "heartbeat_secs" {
  description = "HEARTBEAT_SECS of the gateways; the ALB idle timeout must stay above it."
  type        = number
  default     = 30
}

variable "drain_secs" {
  description = "DRAIN_SECS of the gateways; the deregistration delay and stop timeout cover it."
  type        = number
  default     = 10
}

variable "alb_idle_timeout" {
  description = "Seconds a connection may be idle at the ALB; above HEARTBEAT_SECS so WebSockets live on pings."
  type        = number
  default     = 120
  validation {
    condition     = var.alb_idle_timeout >= 60
    error_message = "alb_idle_timeout must be well above HEARTBEAT_SECS (30 s): 60 or more."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the tasks' logs."
  type        = number
  default     = 30
}

variable "waf_rate_limit" {
  description = "Requests (WebSocket upgrades and HTTP API calls) one IP may make per 5 minutes before WAF blocks it."
  type        = number
  default     = 2000
}

variable "alarm_topic_arns" {
  description = "SNS topics told when messages reach the dead-letter queue."
  type        = list(string)
  default     = []
}
