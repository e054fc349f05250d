# Who may talk to whom: the internet to the ALB (443, and 80 only to be redirected), the
# ALB to the gateways (8080), the tasks to AWS APIs (443) and PostgreSQL (5432).

resource "aws_security_group" "alb" {
  name        = "${var.name_prefix}-alb"
  description = "courier load balancer: HTTPS from anywhere"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS and WSS from clients"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:Port 80 only answers a 301 to HTTPS (alb.tf, listener "http"); closing it would break clients typing http://.
  security_group_id = aws_security_group.alb.id
  description       = "HTTP, redirected to HTTPS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "alb_to_gateways" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateway tasks"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
}

resource "aws_security_group" "gateway" {
  name        = "${var.name_prefix}-gateway"
  description = "courier gateway tasks: 8080 from the load balancer only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_alb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "WebSocket, HTTP API and /readyz from the ALB"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
}

resource "aws_security_group" "worker" {
  name        = "${var.name_prefix}-worker"
  description = "courier worker tasks: no inbound traffic"
  vpc_id      = var.vpc_id
}

# Both kinds of task call AWS APIs (SQS, Secrets Manager, ECR, CloudWatch Logs) over
# HTTPS and PostgreSQL on 5432.
resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  for_each          = { gateway = aws_security_group.gateway.id, worker = aws_security_group.worker.id }
  security_group_id = each.value
  description       = "AWS APIs over HTTPS (through NAT or VPC endpoints)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "tasks_postgres" {
  for_each = {
    for pair in setproduct(["gateway", "worker"], var.database_cidr_blocks) :
    "${pair[0]}-${pair[1]}" => { sg = pair[0], cidr = pair[1] }
  }
  security_group_id = each.value.sg == "gateway" ? aws_security_group.gateway.id : aws_security_group.worker.id
  description       = "PostgreSQL"
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}
