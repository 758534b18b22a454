# Shared by scripts/test and scripts/up: the virtualenv, MongoDB (or its stand-in),
# RabbitMQ, Redis, and clean-up of whatever was started. Source it; do not run it.
#
# The MongoDB stand-in nx-27017 0.8.1 that runs when MONGODB_URI is unset differs from
# MongoDB in known ways; the list, and where each is handled, is the module docs of
# crates/kit/src/mongo/dialect.rs (the only code that names the stand-in).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
VENV="$ROOT/.venv"
mkdir -p "$RUN_DIR"

# Reuse one build directory outside the clone when there is one: CI clones afresh.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/social-network/target}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

STARTED_PIDS=()
STAND_IN=""
RABBITMQ_STARTED_HERE=""
STARTED_NX_PORTS=()
RABBITMQ_SUDO=""
REDIS_STARTED_PORT=""

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # host port seconds what
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        port_open "$1" "$2" && return 0
        sleep 0.1
    done
    die "$4 did not open $1:$2 within $3 s"
}

ensure_rust_tools() {
    command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        log "installing rustfmt and clippy"
        rustup component add rustfmt clippy
    fi
    # The tests that read metrics install the process-wide meter provider, so each test
    # needs a process of its own: nextest's way (cargo test shares one per binary).
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "installing cargo-nextest"
        local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
        mkdir -p "$bin"
        curl -LsSf https://get.nexte.st/latest/linux | tar zxf - -C "$bin" ||
            cargo install --locked cargo-nextest ||
            die "cannot install cargo-nextest (https://nexte.st)"
    fi
}

# apt-get install as root, or through sudo.
apt_install() {
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "installing $* needs root or sudo: apt-get install $*"
        sudo="sudo"
    fi
    log "installing $* (apt-get)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
        { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

ensure_venv() {
    local stamp="$VENV/.requirements"
    if [[ -x "$VENV/bin/python" ]] && cmp -s "$ROOT/scripts/requirements.txt" "$stamp"; then
        return 0
    fi
    command -v python3 >/dev/null || apt_install python3
    # Stock Debian's python3 makes virtualenvs only with python3-venv (ensurepip).
    python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    log "creating the project virtualenv (.venv) with $(grep -v '^#' "$ROOT/scripts/requirements.txt" | xargs)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
    cp "$ROOT/scripts/requirements.txt" "$stamp"
}

# Starts the MongoDB stand-in unless MONGODB_URI points somewhere. $1: data dir
# ("memory" for a throw-away one), $2: preferred port (a free one if taken).
ensure_mongodb() {
    if [[ -n "${MONGODB_URI:-}" ]]; then
        log "using MongoDB at MONGODB_URI"
        return 0
    fi
    local data="$1" port="${2:-}"
    if [[ -z "$port" ]] || port_open 127.0.0.1 "$port"; then port="$(free_port)"; fi
    [[ "$data" == memory ]] || mkdir -p "$data"
    log "starting the MongoDB stand-in nx-27017 on 127.0.0.1:$port (data: $data)"
    "$VENV/bin/nx-27017" --data-dir "$data" --host 127.0.0.1 -p "$port" \
        --log-file "$RUN_DIR/nx-27017-$port.log" --pid-file "$RUN_DIR/nx-27017-$port.pid" \
        >>"$RUN_DIR/nx-27017.out" 2>&1 &
    STARTED_PIDS+=("$!")
    STARTED_NX_PORTS+=("$port")
    wait_port 127.0.0.1 "$port" 30 "nx-27017 (see $RUN_DIR/nx-27017.out)"
    export MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
    STAND_IN=1
}

# Whether the server at URL $1 (default port $2) is to be started here: not when it
# answers, nor when it is on another machine (then waited for; $3 names it). Sets HOST
# and PORT.
to_start_here() {
    local hostport
    hostport="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or sys.argv[2])' "$1" "$2")"
    read -r HOST PORT <<<"$hostport"
    if port_open "$HOST" "$PORT"; then return 1; fi
    if [[ "$HOST" != 127.0.0.1 && "$HOST" != localhost && "$HOST" != ::1 ]]; then
        log "waiting for $3 at $HOST:$PORT"
        wait_port "$HOST" "$PORT" 60 "$3"
        return 1
    fi
}

# RabbitMQ at AMQP_URL: used as it is when it answers or is not on this machine;
# otherwise installed (apt) if need be and started, as Debian's wrapper wants it (root,
# else through sudo), and stopped again by stop_started.
ensure_rabbitmq() {
    local default=5672
    [[ "$AMQP_URL" == amqps:* ]] && default=5671
    to_start_here "$AMQP_URL" "$default" "RabbitMQ (AMQP_URL)" || return 0
    local host="$HOST" port="$PORT"
    if ! command -v rabbitmq-server >/dev/null && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
        apt_install rabbitmq-server
        # On a machine with systemd the package starts it as a system service: that one
        # is the machine's, not ours to stop.
        sleep 2
        if port_open "$host" "$port"; then return 0; fi
    fi
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "starting RabbitMQ needs root or sudo (Debian's rabbitmq-server refuses other users); or set AMQP_URL"
        sudo="sudo"
    fi
    log "starting RabbitMQ on $host:$port (stopped again on exit)"
    $sudo env PATH="$PATH:/usr/sbin" RABBITMQ_NODE_PORT="$port" rabbitmq-server -detached
    RABBITMQ_STARTED_HERE=1 RABBITMQ_SUDO="$sudo"
    wait_port "$host" "$port" 90 "RabbitMQ"
}

# Redis at REDIS_URL (the gateway's stream tickets and idempotency keys): used as it is
# when it answers or is not on this machine; otherwise installed (apt) if need be and
# started without persistence (everything in it can be lost), stopped again by
# stop_started.
ensure_redis() {
    to_start_here "$REDIS_URL" 6379 "Redis (REDIS_URL)" || return 0
    local host="$HOST" port="$PORT"
    if ! command -v redis-server >/dev/null && [[ ! -x /usr/bin/redis-server ]]; then
        apt_install redis-server
        # On a machine with systemd the package starts it as a system service.
        sleep 1
        if port_open "$host" "$port"; then return 0; fi
    fi
    log "starting Redis on $host:$port (stopped again on exit)"
    PATH="$PATH:/usr/bin" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --daemonize yes --logfile "$RUN_DIR/redis-$port.log" --pidfile "$RUN_DIR/redis-$port.pid"
    REDIS_STARTED_PORT="$port"
    wait_port "$host" "$port" 30 "Redis (see $RUN_DIR/redis-$port.log)"
}

# Answers 0 when GET $1 answers 200.
http_ok() {
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
}

# name  binary  address variable  port offset
SYSTEM_SERVICES=(
    "user social-user USER_ADDR 1"
    "post social-post POST_ADDR 2"
    "social-graph social-graph GRAPH_ADDR 3"
    "engagement social-engagement ENGAGEMENT_ADDR 4"
    "notification social-notification NOTIFICATION_ADDR 5"
)

# Settings for a private system run (checks, benches) beside anything else on this
# machine: its own database, exchange and queues (gone two minutes after it stops), the
# development keys, and rate limits out of the way.
isolated_run() { # name
    export DEVELOPMENT_KEYS=true MONGODB_DATABASE="$1" EVENTS_EXCHANGE="$1.events" \
        EVENTS_QUEUE_PREFIX="$1" EVENTS_EPHEMERAL=true EVENTS_QUEUE_TYPE=classic \
        REDIS_KEY_PREFIX="$1:" \
        GATEWAY_RATE_ANONYMOUS=1000000/60s GATEWAY_RATE_ACCOUNT=1000000/60s \
        GATEWAY_RATE_LOGIN=1000000/60s GATEWAY_RATE_REFRESH=1000000/60s GATEWAY_RATE_SIGNUP=1000000/60s RUST_LOG=warn
}

# Free ports for the five services (SYSTEM_BASE+1..+5) and the gateway (SYSTEM_GATEWAY,
# +6), all below 32768, where the kernel takes no local ports for outgoing connections:
# a port there that is free when checked cannot become a client's before the service
# binds it (a fresh-clone run lost its API check to that).
free_system_ports() {
    local i
    for ((i = 0; i < 20; i++)); do
        SYSTEM_BASE=$((20000 + RANDOM % 12000))
        SYSTEM_GATEWAY=$((SYSTEM_BASE + 6))
        local taken=0 p
        for p in 1 2 3 4 5 6; do port_open 127.0.0.1 $((SYSTEM_BASE + p)) && taken=1; done
        ((taken == 0)) && return 0
    done
    die "no free ports for the services"
}

# Whether the gRPC server at $1 says SERVING within $4 tries (default 600) 0.2 s apart,
# asking with $GRPCURL (default the virtualenv's grpcurl); $2 and $3 name it and its log
# while it waits. Only SERVING ends the wait: NOT_SERVING (listening, start-up not done)
# contains the word, and a check landing then once ended the wait and killed the system.
# ('"SERVING"' with its quotes: '"NOT_SERVING"' does not contain it.)
wait_serving() { # address name log [tries]
    local address="$1" name="$2" file="$3" tries="${4:-600}" i answer
    local grpcurl="${GRPCURL:-$VENV/bin/grpcurl}"
    for ((i = 0; i < tries; i++)); do
        # Read whole, not piped into `grep -q`: under pipefail, grep leaving at the match
        # can fail grpcurl with SIGPIPE, and a SERVING answer would count as none.
        answer="$("$grpcurl" -plaintext "$address" grpc.health.v1.Health/Check 2>/dev/null)" || true
        [[ "$answer" == *'"SERVING"'* ]] && return 0
        ((i % 50 == 49)) && log "waiting for $name (log: $file)"
        sleep 0.2
    done
    return 1
}

# Starts the five services of the $1 (debug|release) build on ports $2+1 .. $2+5 and the
# gateway on port $3, each logging to .run/<name>$4.log, and waits until every service is
# SERVING and the gateway ready. Fills SYSTEM ("name address log" lines) for a summary,
# and GATEWAY_PID.
start_system() {
    local profile="$1" base="$2" gateway_port="$3" tag="${4:-}" entry name bin var offset port exe i
    SYSTEM=()
    export USER_SERVICE_URL="http://127.0.0.1:$((base + 1))"
    export POST_SERVICE_URL="http://127.0.0.1:$((base + 2))"
    export GRAPH_SERVICE_URL="http://127.0.0.1:$((base + 3))"
    export ENGAGEMENT_SERVICE_URL="http://127.0.0.1:$((base + 4))"
    export NOTIFICATION_SERVICE_URL="http://127.0.0.1:$((base + 5))"
    for entry in "${SYSTEM_SERVICES[@]}"; do
        read -r name bin var offset <<<"$entry"
        port=$((base + offset))
        exe="$CARGO_TARGET_DIR/$profile/$bin"
        [[ -x "$exe" ]] || die "$exe is missing: cargo build --bins"
        port_open 127.0.0.1 "$port" && die "port $port ($name) is already in use"
        env "$var=127.0.0.1:$port" "$exe" >"$RUN_DIR/$name$tag.log" 2>&1 &
        STARTED_PIDS+=("$!")
        SYSTEM+=("$name 127.0.0.1:$port .run/$name$tag.log")
    done
    port_open 127.0.0.1 "$gateway_port" && die "port $gateway_port (gateway) is already in use"
    GATEWAY_ADDR="127.0.0.1:$gateway_port" "$CARGO_TARGET_DIR/$profile/social-gateway" \
        >"$RUN_DIR/gateway$tag.log" 2>&1 &
    STARTED_PIDS+=("$!")
    GATEWAY_PID=$!
    SYSTEM+=("gateway http://127.0.0.1:$gateway_port .run/gateway$tag.log")

    for entry in "${SYSTEM_SERVICES[@]}"; do
        read -r name bin var offset <<<"$entry"
        wait_serving "127.0.0.1:$((base + offset))" "$name" ".run/$name$tag.log" ||
            die "$name did not become SERVING; see .run/$name$tag.log"
    done
    for ((i = 0; i < 150; i++)); do
        http_ok "http://127.0.0.1:$gateway_port/readyz" && return 0
        sleep 0.2
    done
    die "the gateway did not become ready; see .run/gateway$tag.log"
}

stop_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
    # The stand-in's pid files of this run (its port was a free one); its 10 newest logs.
    local port
    for port in "${STARTED_NX_PORTS[@]}"; do
        rm -f "$RUN_DIR/nx-27017-$port.pid"
    done
    STARTED_NX_PORTS=()
    # shellcheck disable=SC2012 # names without spaces
    { ls -t "$RUN_DIR"/nx-27017-*.log 2>/dev/null || true; } | tail -n +11 | xargs -r rm -f
    if [[ "$RABBITMQ_STARTED_HERE" == 1 ]]; then
        log "stopping the RabbitMQ this script started"
        $RABBITMQ_SUDO env PATH="$PATH:/usr/sbin" timeout 60 rabbitmqctl stop >/dev/null 2>&1 || true
        RABBITMQ_STARTED_HERE=""
    fi
    if [[ -n "$REDIS_STARTED_PORT" ]]; then
        log "stopping the Redis this script started"
        redis-cli -p "$REDIS_STARTED_PORT" shutdown nosave >/dev/null 2>&1 ||
            kill "$(cat "$RUN_DIR/redis-$REDIS_STARTED_PORT.pid" 2>/dev/null)" 2>/dev/null || true
        REDIS_STARTED_PORT=""
    fi
}

# Whether the schemathesis output in file $1 failed only by crashes of its own: its
# summary's error lines ("  🚫 <kind>: <count>") are all "Runtime Error" and no check
# failed (no FAILURES section). scripts/api-check runs such a run once more.
schemathesis_only_crashed() {
    local errors
    errors=$(grep -E '^  🚫 [^:]+: [0-9]+$' "$1" || true)
    [[ -n $errors ]] && ! grep -qv 'Runtime Error' <<<"$errors" &&
        ! grep -q '^=* FAILURES =*$' "$1"
}
