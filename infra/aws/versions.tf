# courier on AWS: ECS Fargate gateways behind an ALB, workers scaled on the SQS backlog.
#
#   sqs.tf          the ingest FIFO queue, its dead-letter queue and redrive policy
#   iam.tf          least-privilege roles: task execution, gateway, worker, DLQ operator
#   network.tf      security groups
#   alb.tf          load balancer, WAF, target group (/readyz), listeners
#   ecs.tf          cluster, task definitions, services
#   autoscaling.tf  gateways on CPU, workers on backlog per task
#   logs.tf         KMS key, log groups, dead-letter alarm
#
# Checked by scripts/check-infra.sh: every .tf parses (python-hcl2), checkov scans the
# folder; each check skipped carries its reason inline, in a skip comment on the resource.
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Application = var.name_prefix
      ManagedBy   = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
