#!/usr/bin/env bash
# Bring up the test broker: RabbitMQ with its AMQP 1.0 plugin on loopback only,
# a test user with a password, no anonymous AMQP 1.0 login, and the management
# API (loopback) so tests can declare their own queues and exchanges.
#
# Idempotent: when the configuration on disk is already ours and the node
# answers for our user, it returns in well under a second. When the
# configuration must change, a running node is stopped first (it reads its
# config only at boot). Recipe and gotchas: shared/STACK.md §2a, §2d, §7.
set -euo pipefail

: "${IPLOSCTL_TEST_AMQP_USER:=iplosctl-test}"
: "${IPLOSCTL_TEST_AMQP_PASSWORD:=iplosctl-test-password}"
ETC=/etc/rabbitmq
NODE=rabbit@localhost
AMQP_PORT=5672
HTTP_PORT=15672
export DEBIAN_FRONTEND=noninteractive

say() { printf 'test-broker: %s\n' "$*"; }
die() { printf 'test-broker: error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when our user can log in to the management API and the AMQP 1.0 plugin runs.
node_ready() {
  python3 - "$IPLOSCTL_TEST_AMQP_USER" "$IPLOSCTL_TEST_AMQP_PASSWORD" "$HTTP_PORT" <<'PY' 2>/dev/null
import base64, json, sys, urllib.request
user, password, port = sys.argv[1:4]
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/nodes")
req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
with urllib.request.urlopen(req, timeout=3) as resp:
    nodes = json.load(resp)
plugins = {p for node in nodes for p in node.get("enabled_plugins", [])}
sys.exit(0 if "rabbitmq_amqp1_0" in plugins else 1)
PY
}

if ! command -v rabbitmq-server >/dev/null; then
  [ "$(id -u)" -eq 0 ] || die "RabbitMQ is not installed; run as root: apt-get install -y rabbitmq-server"
  say "installing rabbitmq-server from apt"
  apt-get update -qq
  apt-get install -y -qq rabbitmq-server >/dev/null
fi

# The password hash RabbitMQ 3.10 expects: base64(salt4 + sha256(salt4 + password)).
# The salt is derived from user and password so the file is the same on every run.
HASH=$(python3 -c '
import base64, hashlib, sys
user, password = sys.argv[1], sys.argv[2].encode()
salt = hashlib.sha256(("iplosctl-test-salt:" + user).encode()).digest()[:4]
print(base64.b64encode(salt + hashlib.sha256(salt + password).digest()).decode())' \
  "$IPLOSCTL_TEST_AMQP_USER" "$IPLOSCTL_TEST_AMQP_PASSWORD")

want_env=$(cat <<ENV
# written by iplosctl scripts/test-broker.sh: loopback only
NODENAME=$NODE
NODE_IP_ADDRESS=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
ENV
)
want_conf=$(cat <<CONF
# written by iplosctl scripts/test-broker.sh
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $HTTP_PORT
load_definitions = $ETC/definitions.json
# no anonymous AMQP 1.0 login: a wrong password must fail (STACK.md §2d)
amqp1_0.default_user = none
CONF
)
want_defs=$(cat <<DEFS
{"users": [{"name": "$IPLOSCTL_TEST_AMQP_USER", "password_hash": "$HASH",
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"}],
 "vhosts": [{"name": "/"}],
 "permissions": [{"user": "$IPLOSCTL_TEST_AMQP_USER", "vhost": "/",
                  "configure": ".*", "write": ".*", "read": ".*"}]}
DEFS
)
want_plugins="[rabbitmq_amqp1_0,rabbitmq_management]."

same() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
config_current() {
  same "$ETC/rabbitmq-env.conf" "$want_env" && same "$ETC/rabbitmq.conf" "$want_conf" \
    && same "$ETC/definitions.json" "$want_defs" && same "$ETC/enabled_plugins" "$want_plugins"
}

if config_current && node_ready; then
  say "ready (unchanged): amqp://127.0.0.1:$AMQP_PORT user $IPLOSCTL_TEST_AMQP_USER"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "the broker's configuration must change; run as root: sudo $0"

if port_open "$AMQP_PORT" || pgrep -u rabbitmq beam.smp >/dev/null 2>&1; then
  if [ -n "${IPLOSCTL_KEEP_BROKER:-}" ]; then
    die "the running RabbitMQ node must restart to load the test configuration; IPLOSCTL_KEEP_BROKER is set, so stopping here"
  fi
  say "the RabbitMQ node on this machine will restart now to load the test configuration"
  say "(AMQP 1.0 plugin, loopback only, user $IPLOSCTL_TEST_AMQP_USER); its open connections will drop."
  say "Set IPLOSCTL_KEEP_BROKER=1 to refuse instead. Stopping the running node..."
  # Stop with the configuration the node was started with (its node name), then make sure.
  rabbitmqctl stop >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do pgrep -u rabbitmq beam.smp >/dev/null 2>&1 || break; sleep 0.25; done
  pkill -u rabbitmq beam.smp 2>/dev/null || true
  for _ in $(seq 1 40); do port_open "$AMQP_PORT" || break; sleep 0.25; done
  port_open "$AMQP_PORT" && die "port $AMQP_PORT is still taken by something that is not the RabbitMQ node"
fi

install -d -o rabbitmq -g rabbitmq "$ETC"
printf '%s\n' "$want_env" > "$ETC/rabbitmq-env.conf"
printf '%s\n' "$want_conf" > "$ETC/rabbitmq.conf"
printf '%s\n' "$want_defs" > "$ETC/definitions.json"
chmod 644 "$ETC/rabbitmq-env.conf" "$ETC/rabbitmq.conf"
chown rabbitmq:rabbitmq "$ETC/definitions.json"; chmod 640 "$ETC/definitions.json"
rabbitmq-plugins enable --offline rabbitmq_amqp1_0 rabbitmq_management >/dev/null
# rabbitmq-plugins writes the file with its own formatting; keep ours for the comparison.
printf '%s' "$want_plugins" > "$ETC/enabled_plugins"
chown rabbitmq:rabbitmq "$ETC/enabled_plugins"

say "starting RabbitMQ ($NODE, loopback only)"
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 240); do node_ready && break; sleep 0.5; done
node_ready || die "RabbitMQ did not become ready in 120 s; see /var/log/rabbitmq/$NODE.log"
say "ready: amqp://127.0.0.1:$AMQP_PORT user $IPLOSCTL_TEST_AMQP_USER (stop: rabbitmqctl stop)"
