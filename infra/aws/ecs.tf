# ECS on Fargate: gateways behind the ALB, workers on their own, and a one-off task
# definition for `worker dlq ...`.

locals {
  # The queues are Terraform's (sqs.tf): the tasks must not create them.
  queue_url = "sqs://${var.name_prefix}?create=false"

  common_environment = [
    { name = "QUEUE_URL", value = local.queue_url },
    # The same number the ingest queue's redrive policy is built from (sqs.tf).
    { name = "MAX_ATTEMPTS", value = tostring(var.max_attempts) },
    { name = "AWS_REGION", value = var.region },
    { name = "LOG_FORMAT", value = "json" },
    { name = "RUST_LOG", value = "info" },
  ]

  common_secrets = [
    { name = "DATABASE_URL", valueFrom = var.database_url_secret_arn },
  ]

  # GET a path on a local port with bash's /dev/tcp (the image has no curl); 200 is healthy.
  http_check = "exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET %s HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"

  container_hardening = {
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    privileged             = false
    linuxParameters = {
      capabilities       = { drop = ["ALL"] }
      initProcessEnabled = true
    }
    mountPoints = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
  }
}

resource "aws_ecs_cluster" "main" {
  name = var.name_prefix

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  # ECS Exec sessions, if ever enabled on a service, are encrypted and logged.
  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.logs.arn
      logging    = "OVERRIDE"
      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }
}

# ---- gateway --------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${var.name_prefix}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.gateway.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_hardening, {
    name         = "gateway"
    image        = var.image
    essential    = true
    command      = ["gateway"]
    portMappings = [{ containerPort = 8080, protocol = "tcp", name = "http" }]
    environment = concat(local.common_environment, [
      { name = "BIND", value = "0.0.0.0:8080" },
      { name = "HEARTBEAT_SECS", value = tostring(var.heartbeat_secs) },
      { name = "DRAIN_SECS", value = tostring(var.drain_secs) },
    ])
    secrets = concat(local.common_secrets, [
      { name = "API_TOKEN", valueFrom = var.api_token_secret_arn },
      { name = "JWT_SECRET", valueFrom = var.jwt_secret_arn },
    ])
    # Liveness only (/healthz): readiness is the target group's /readyz check.
    healthCheck = {
      command     = ["CMD", "bash", "-c", format(local.http_check, 8080, "/healthz")]
      interval    = 10
      timeout     = 3
      retries     = 3
      startPeriod = 20
    }
    # SIGTERM, then this long before SIGKILL: the drain fits (Fargate allows up to 120).
    stopTimeout = min(120, var.drain_secs + 20)
    ulimits     = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gateway.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "gateway"
      }
    }
  })])
}

resource "aws_ecs_service" "gateway" {
  name                              = "${var.name_prefix}-gateway"
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_min
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 30
  propagate_tags                    = "SERVICE"
  # Rolling: new gateways are healthy on /readyz before old ones go.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = 8080
  }

  lifecycle {
    # The autoscaler owns the count.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}

# ---- worker ---------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name_prefix}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_hardening, {
    name      = "worker"
    image     = var.image
    essential = true
    command   = ["worker"]
    environment = concat(local.common_environment, [
      # /metrics (ingest backlog, batches, dead letters) and /healthz, inside the VPC.
      { name = "METRICS_BIND", value = "0.0.0.0:9090" },
    ])
    secrets = local.common_secrets
    healthCheck = {
      command     = ["CMD", "bash", "-c", format(local.http_check, 9090, "/healthz")]
      interval    = 10
      timeout     = 3
      retries     = 3
      startPeriod = 20
    }
    # A stopping worker finishes, stores and acks its batch.
    stopTimeout = 60
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "worker"
      }
    }
  })])
}

resource "aws_ecs_service" "worker" {
  name                               = "${var.name_prefix}-worker"
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.worker.arn
  desired_count                      = var.worker_min
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count]
  }
}

# ---- dead letters: one-off operator task ----------------------------------------------------
#   aws ecs run-task --cluster courier --launch-type FARGATE --task-definition courier-dlq \
#     --network-configuration 'awsvpcConfiguration={subnets=[...],securityGroups=[...]}' \
#     --overrides '{"containerOverrides":[{"name":"worker","command":["worker","dlq","replay","--all"]}]}'
# Its output lands in the dlq log group.

resource "aws_ecs_task_definition" "dlq" {
  family                   = "${var.name_prefix}-dlq"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.dlq_operator.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_hardening, {
    name        = "worker"
    image       = var.image
    essential   = true
    command     = ["worker", "dlq", "list"]
    environment = local.common_environment
    secrets     = local.common_secrets
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.dlq.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "dlq"
      }
    }
  })])
}
