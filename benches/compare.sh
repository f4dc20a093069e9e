#!/usr/bin/env bash
# benches/compare.sh: mta-stsd against nginx and Caddy, side by side, on this machine.
#
# What it measures (one table, docs/benchmark.md explains each row):
#   - keep-alive HTTPS requests/s over HTTP/1.1 and h2;
#   - new TLS connections/s (one request each, oha --disable-keepalive), with session
#     resumption off on every server (full handshakes), then on;
#   - p50/p99 latency at a fixed request rate (oha -q);
#   - the ratio mta-stsd/nginx and mta-stsd/Caddy per row, and the busy time of each core
#     (/proc/stat) during each run;
#   - mta-stsd's resident memory (VmRSS) and startup time to its "mta-stsd serving" line with
#     1 000, 10 000 and 100 000 tenants (internal CA), and the memory per tenant.
#
# Every server gets the same ECDSA P-256 certificate (openssl), the same policy body (fetched
# from mta-stsd and given verbatim to the peers), TLS 1.3, one core (taskset -c 0); the load
# tool runs on the other core (taskset -c 1). Everything listens on 127.0.0.1 only, with its
# own temporary config and pid files; every server started here is killed on exit.
#
# Usage: benches/compare.sh [--quick] [--duration SECS] [--connections N] [--rate QPS]
#                           [--tenants "1000 10000 100000"] [--no-build] [--no-peers]
#                           [--skip-throughput] [--skip-memory] [--keep]
#   --quick       3 s per measurement, tenants "1000 10000"
#   --no-peers    measure mta-stsd only (ratios shown as n/a)
#   --keep        keep the work directory (configs, logs, raw oha JSON) and print its path
#   MTA_STSD_BIN=path measures another mta-stsd binary (e.g. a copy built before a change)
#
# Needs: cargo, openssl, curl, jq, taskset, oha (OHA=/path, .tools/bin/oha, or on PATH;
# `cargo install oha --locked --root .tools`), and for the peers the Debian packages
# nginx-light and caddy. Two or more cores. Not a test: never run it in CI.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=10
CONNECTIONS=50
RATE=5000
TENANT_COUNTS="1000 10000 100000"
BUILD=1
PEERS=1
THROUGHPUT=1
MEMORY=1
KEEP=0
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HOST=mta-sts.bench.example
POLICY_PATH=/.well-known/mta-sts.txt
# Upper bound on any wait for a server to come up (100 000 tenants with the internal CA take
# tens of seconds on one core).
START_LIMIT=600

while (($#)); do
    case "$1" in
    --quick) DURATION=3; TENANT_COUNTS="1000 10000" ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --tenants) TENANT_COUNTS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --no-peers) PEERS=0 ;;
    --skip-throughput) THROUGHPUT=0 ;;
    --skip-memory) MEMORY=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "compare.sh: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }

for tool in openssl curl jq taskset ss; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
if [[ -z ${OHA:-} ]]; then
    if [[ -x $REPO/.tools/bin/oha ]]; then OHA=$REPO/.tools/bin/oha; else OHA=$(command -v oha || true); fi
fi
if ((THROUGHPUT)); then
    [[ -n $OHA && -x $OHA ]] || die "oha not found: cargo install oha --locked --root $REPO/.tools"
fi
(($(nproc) >= 2)) || die "needs two cores (server on one, load tool on the other)"
HAVE_NGINX=0 HAVE_CADDY=0
if ((PEERS)); then
    if command -v nginx >/dev/null; then HAVE_NGINX=1; else note "nginx not installed (apt install nginx-light): skipped"; fi
    if command -v caddy >/dev/null; then HAVE_CADDY=1; else note "caddy not installed (apt install caddy): skipped"; fi
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mta-stsd-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then note "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Clients in this script trust only what they are told: no system bundle behind our back.
unset SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS

if ((BUILD)); then
    note "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN=${MTA_STSD_BIN:-$TARGET_DIR/release/mta-stsd}
[[ -x $BIN ]] || die "$BIN not found (build with cargo build --release)"

# ---------------------------------------------------------------------------------------------
# Shared material: one certificate, one body.

CERTS=$WORK/certs
mkdir -p "$CERTS/$HOST"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
    -keyout "$CERTS/$HOST/tls.key" -out "$CERTS/$HOST/tls.crt" 2>/dev/null
CRT=$CERTS/$HOST/tls.crt
KEY=$CERTS/$HOST/tls.key

# A free loopback port for the peers (mta-stsd binds port 0 and logs the address), below the
# kernel's ephemeral range so that none of the load tool's own connections holds it.
free_port() {
    local port i low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    ((low > 11000)) || low=60000
    for ((i = 0; i < 100; i++)); do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! ss -Htan "sport = :$port" | grep -q .; then echo "$port"; return; fi
    done
    die "no free port found"
}

# Waits (bounded) until https://$HOST:$1 answers 200.
wait_https() {
    local port=$1 pid=$2 deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -sk --max-time 2 -o /dev/null -w '%{http_code}' --resolve "$HOST:$port:127.0.0.1" \
            "https://$HOST:$port$POLICY_PATH" 2>/dev/null | grep -q 200; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Waits (bounded) for the "mta-stsd serving" line in log $1 of process $2; prints the line.
wait_serving() {
    local log=$1 pid=$2 deadline=$((SECONDS + START_LIMIT)) line
    while ((SECONDS < deadline)); do
        line=$(grep -m1 '"mta-stsd serving"' "$log" 2>/dev/null || true)
        if [[ -n $line ]]; then echo "$line"; return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.02
    done
    return 1
}

stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

mta_config() { # dir resumption(true|false) -> config dir with one tenant, files issuer
    local dir=$1
    mkdir -p "$dir/tenants"
    cat >"$dir/mta-stsd.yaml" <<EOF
listen: "127.0.0.1:0"
state_dir: state
issuer: files
files:
  dir: $CERTS
tls:
  session_resumption: $2
EOF
    cat >"$dir/tenants/bench.yaml" <<EOF
domain: bench.example
mode: enforce
mx: [mail.bench.example]
max_age: 604800
EOF
}

# Starts mta-stsd on the server core; sets PORT and SPID.
start_mta() {
    local dir=$WORK/mta-$1
    mta_config "$dir" "$1"
    rm -f "$dir/log" # wait_serving must not find the previous run's line
    taskset -c "$SERVER_CPU" "$BIN" --log-format json serve --config "$dir" >"$dir/log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    local line
    line=$(wait_serving "$dir/log" "$SPID") || die "mta-stsd did not start (log: $dir/log)"
    PORT=$(jq -r '.https' <<<"$line" | sed 's/.*://')
}

BODY=$WORK/body.txt

# nginx-light 1.22: one worker, access log off, the body returned from memory like mta-stsd.
start_nginx() {
    local dir=$WORK/nginx-$1 tls_resume
    mkdir -p "$dir"
    PORT=$(free_port)
    if [[ $1 == false ]]; then
        tls_resume="ssl_session_tickets off; ssl_session_cache off;"
    else
        tls_resume="ssl_session_tickets on; ssl_session_cache shared:bench:10m;"
    fi
    # nginx's `return` takes a quoted string: the body has only CR LF and printable ASCII.
    local body
    body=$(sed 's/\r$//' "$BODY" | awk '{printf "%s\\r\\n", $0}')
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$PORT ssl http2;
        server_name $HOST;
        ssl_certificate $CRT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.3;
        # The same suite preference as mta-stsd (AES-128-GCM first, whatever the client lists).
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        $tls_resume
        location = $POLICY_PATH {
            default_type "text/plain; charset=utf-8";
            add_header Cache-Control "max-age=60";
            return 200 "$body";
        }
        location / { return 404; }
    }
}
EOF
    mkdir -p "$dir/tmp"
    taskset -c "$SERVER_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    wait_https "$PORT" "$SPID" || die "nginx did not start ($dir/error.log)"
}

# Caddy 2.6 from JSON: admin off, HOME/XDG in the work dir, static response from memory.
start_caddy() {
    local dir=$WORK/caddy-$1
    mkdir -p "$dir/home"
    PORT=$(free_port)
    local tickets_disabled=true
    [[ $1 == true ]] && tickets_disabled=false
    jq -n --arg port "$PORT" --arg host "$HOST" --arg path "$POLICY_PATH" --rawfile body "$BODY" \
        --arg crt "$CRT" --arg key "$KEY" --arg root "$dir/home/data" \
        --argjson tickets_disabled "$tickets_disabled" '{
      admin: {disabled: true},
      logging: {logs: {default: {level: "ERROR"}}},
      storage: {module: "file_system", root: $root},
      apps: {
        http: {servers: {bench: {
          listen: ["127.0.0.1:\($port)"],
          protocols: ["h1", "h2"],
          automatic_https: {disable: true},
          tls_connection_policies: [{certificate_selection: {any_tag: ["bench"]}, protocol_min: "tls1.3"}],
          routes: [
            {match: [{host: [$host], path: [$path]}],
             handle: [{handler: "static_response", status_code: 200, body: $body,
                       headers: {"Content-Type": ["text/plain; charset=utf-8"], "Cache-Control": ["max-age=60"]}}]},
            {handle: [{handler: "static_response", status_code: 404}]}
          ]}}},
        tls: {
          certificates: {load_files: [{certificate: $crt, key: $key, tags: ["bench"]}]},
          session_tickets: {disabled: $tickets_disabled}
        }
      }}' >"$dir/caddy.json"
    HOME=$dir/home XDG_DATA_HOME=$dir/home/data XDG_CONFIG_HOME=$dir/home/config \
        taskset -c "$SERVER_CPU" caddy run --config "$dir/caddy.json" >"$dir/log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    wait_https "$PORT" "$SPID" || die "caddy did not start ($dir/log)"
}

# ---------------------------------------------------------------------------------------------
# Measurements.

# "busy total" jiffies of one CPU from /proc/stat.
cpu_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { idle = $5 + $6; total = 0; for (i = 2; i <= 9; i++) total += $i; print total - idle, total }' /proc/stat
}

# CPU time (user + system, clock ticks) of process $1 and its children (nginx's worker).
proc_ticks() {
    local pid total=0 t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# One oha run against PORT and server SPID: load NAME [extra oha args...]; prints
# "ok_per_s p50_ms p99_ms server_core_busy% client_core_busy% server_us_per_request".
load() {
    local name=$1
    shift
    local out=$WORK/oha-$name.json s0 c0 s1 c1 p0 p1
    read -r -a s0 <<<"$(cpu_jiffies "$SERVER_CPU")"
    read -r -a c0 <<<"$(cpu_jiffies "$CLIENT_CPU")"
    p0=$(proc_ticks "$SPID")
    timeout $((DURATION + 30)) taskset -c "$CLIENT_CPU" "$OHA" --no-tui --output-format json \
        --insecure --worker-threads 1 -z "${DURATION}s" \
        --connect-to "$HOST:$PORT:127.0.0.1:$PORT" "$@" \
        "https://$HOST:$PORT$POLICY_PATH" >"$out" 2>"$out.err" || true
    p1=$(proc_ticks "$SPID")
    read -r -a s1 <<<"$(cpu_jiffies "$SERVER_CPU")"
    read -r -a c1 <<<"$(cpu_jiffies "$CLIENT_CPU")"
    if ! jq -e .summary "$out" >/dev/null 2>&1; then
        note "oha failed for $name: $(head -c 300 "$out.err")"
        echo "- - - 0 0 -"
        return
    fi
    # oha cancels the requests in flight at the deadline ("aborted due to deadline"): not errors.
    local errors
    errors=$(jq '[.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0' "$out")
    if ((errors > 0)); then note "$name: $errors request errors: $(jq -c .errorDistribution "$out")"; fi
    local busy_s busy_c
    busy_s=$(awk -v b="$((s1[0] - s0[0]))" -v t="$((s1[1] - s0[1]))" 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
    busy_c=$(awk -v b="$((c1[0] - c0[0]))" -v t="$((c1[1] - c0[1]))" 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
    jq -r --arg s "$busy_s" --arg c "$busy_c" --arg ticks "$((p1 - p0))" --arg hz "$CLK_TCK" '
        (.statusCodeDistribution["200"] // 0) as $ok
        | "\($ok / .summary.total | floor) \(.metrics.latency_ms.p50 * 1000 | round / 1000)"
          + " \(.metrics.latency_ms.p99 * 1000 | round / 1000) \($s) \($c)"
          + " \(if $ok > 0 then ($ticks | tonumber) / ($hz | tonumber) * 1e6 / $ok * 10 | round / 10 else "-" end)"' "$out"
}

declare -A R # R[server,row] = "ok_rps p50 p99 cpuS cpuC"
ROWS=(h1 h2 full resumed latency)

measure_server() { # name start_function
    local name=$1 start=$2
    note "$name: keep-alive, full handshakes, latency"
    "$start" false
    R[$name,h1]=$(load "$name-h1" -c "$CONNECTIONS" --http-version 1.1)
    R[$name,h2]=$(load "$name-h2" -c "$CONNECTIONS" --http-version 2)
    R[$name,full]=$(load "$name-full" -c "$CONNECTIONS" --http-version 1.1 --disable-keepalive)
    R[$name,latency]=$(load "$name-latency" -c 10 --http-version 1.1 -q "$RATE" --latency-correction)
    stop_pid "$SPID"
    note "$name: handshakes with resumption"
    "$start" true
    R[$name,resumed]=$(load "$name-resumed" -c "$CONNECTIONS" --http-version 1.1 --disable-keepalive)
    stop_pid "$SPID"
}

if ((THROUGHPUT)); then
    # The body every server returns: mta-stsd's rendering, verbatim.
    start_mta true
    curl -sk --max-time 5 --resolve "$HOST:$PORT:127.0.0.1" "https://$HOST:$PORT$POLICY_PATH" >"$BODY"
    stop_pid "$SPID"
    [[ -s $BODY ]] || die "could not fetch the policy body from mta-stsd"
    note "policy body: $(wc -c <"$BODY") bytes"

    SERVERS=(mta-stsd)
    measure_server mta-stsd start_mta
    if ((HAVE_NGINX)); then
        start_nginx true
        curl -sk --resolve "$HOST:$PORT:127.0.0.1" "https://$HOST:$PORT$POLICY_PATH" | cmp -s - "$BODY" ||
            die "nginx does not return the same body"
        stop_pid "$SPID"
        SERVERS+=(nginx)
        measure_server nginx start_nginx
    fi
    if ((HAVE_CADDY)); then
        start_caddy true
        curl -sk --resolve "$HOST:$PORT:127.0.0.1" "https://$HOST:$PORT$POLICY_PATH" | cmp -s - "$BODY" ||
            die "caddy does not return the same body"
        stop_pid "$SPID"
        SERVERS+=(caddy)
        measure_server caddy start_caddy
    fi
fi

# Startup time and memory with many tenants (internal CA, one leaf per tenant).
declare -A M # M[count] = "startup_s rss_kib"
if ((MEMORY)); then
    MDIR=$WORK/many
    mkdir -p "$MDIR/tenants"
    cat >"$MDIR/mta-stsd.yaml" <<EOF
listen: "127.0.0.1:0"
state_dir: state
issuer: internal
EOF
    for count in 0 $TENANT_COUNTS; do
        rm -f "$MDIR/tenants/"*.yaml
        if ((count > 0)); then
            awk -v n="$count" 'BEGIN { for (i = 0; i < n; i++)
                printf "- domain: t%d.bench.example\n  mode: enforce\n  mx: [mail.t%d.bench.example]\n  max_age: 604800\n", i, i }' \
                >"$MDIR/tenants/all.yaml"
        fi
        note "startup with $count tenants"
        rm -f "$MDIR/log"
        t0=$(date +%s%N)
        taskset -c "$SERVER_CPU" "$BIN" --log-format json serve --config "$MDIR" >"$MDIR/log" 2>&1 &
        SPID=$!
        PIDS+=("$SPID")
        wait_serving "$MDIR/log" "$SPID" >/dev/null || die "mta-stsd did not start with $count tenants"
        t1=$(date +%s%N)
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SPID/status")
        M[$count]="$(awk -v d="$((t1 - t0))" 'BEGIN { printf "%.2f", d / 1e9 }') $rss"
        stop_pid "$SPID"
    done
fi

# ---------------------------------------------------------------------------------------------
# The table.

field() { # server row index(1-based)
    local v=${R[$1,$2]:-}
    [[ -n $v ]] || { echo "-"; return; }
    awk -v i="$3" '{ print $i }' <<<"$v"
}
ratio() { # a b
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

echo
echo "mta-stsd $("$BIN" --version | awk '{ print $2 }') ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))," \
    "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, kernel $(uname -r)"
echo "server on CPU $SERVER_CPU, oha $( ((THROUGHPUT)) && "$OHA" --version | awk '{ print $2 }') on CPU $CLIENT_CPU; ${DURATION}s per run, $CONNECTIONS connections;" \
    "TLS 1.3, ECDSA P-256; body $( [[ -s $BODY ]] && wc -c <"$BODY" || echo '-') bytes"
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
((HAVE_NGINX)) && echo "nginx: $(nginx -v 2>&1 | sed 's/.*\///')" || true
((HAVE_CADDY)) && echo "caddy: $(caddy version | awk '{ print $1 }')" || true
echo
if ((THROUGHPUT)); then
    declare -A LABEL=([h1]="keep-alive HTTP/1.1 req/s" [h2]="keep-alive h2 req/s"
        [full]="new TLS conn/s, resumption off" [resumed]="new TLS conn/s, resumption on"
        [latency]="p50 / p99 ms at $RATE req/s")
    line() { printf '| %-32s | %-15s | %-15s | %-15s | %-8s | %-8s | %-14s |\n' "$@"; }
    rule() { printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..34})" "$(printf -- '-%.0s' {1..17})" \
        "$(printf -- '-%.0s' {1..17})" "$(printf -- '-%.0s' {1..17})" "$(printf -- '-%.0s' {1..10})" \
        "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..16})"; }
    # A rate is marked ">=" when the load tool's core was saturated (>= 95 %) and the server's
    # was not (< 90 %): the load tool, not the server, set the figure.
    rate() { # server row
        local v
        v=$(field "$1" "$2" 1)
        if [[ $v != - ]] && (($(field "$1" "$2" 5) >= 95 && $(field "$1" "$2" 4) < 90)); then v=">=$v"; fi
        echo "$v"
    }
    line measurement mta-stsd nginx caddy "m/nginx" "m/caddy" "core busy m/n/c"
    rule
    for row in "${ROWS[@]}"; do
        if [[ $row == latency ]]; then
            cell() { echo "$(field "$1" latency 2) / $(field "$1" latency 3)"; }
            # Lower is better: the ratios compare p99.
            rn=$(ratio "$(field mta-stsd latency 3)" "$(field nginx latency 3)")
            rc=$(ratio "$(field mta-stsd latency 3)" "$(field caddy latency 3)")
        else
            cell() { rate "$1" "$row"; }
            rn=$(ratio "$(field mta-stsd "$row" 1)" "$(field nginx "$row" 1)")
            rc=$(ratio "$(field mta-stsd "$row" 1)" "$(field caddy "$row" 1)")
        fi
        line "${LABEL[$row]}" "$(cell mta-stsd)" "$(cell nginx)" "$(cell caddy)" "$rn" "$rc" \
            "$(field mta-stsd "$row" 4)/$(field nginx "$row" 4)/$(field caddy "$row" 4)"
    done
    echo
    echo "Server CPU time per request (user + system of the server process, /proc/PID/stat), in"
    echo "microseconds; the ratios say how many times more CPU the peer spends than mta-stsd:"
    echo
    line "measurement" "mta-stsd" "nginx" "caddy" "n/m" "c/m" "load tool m/n/c"
    rule
    for row in "${ROWS[@]}"; do
        [[ $row == latency ]] && continue
        line "${LABEL[$row]% req/s}" "$(field mta-stsd "$row" 6)" "$(field nginx "$row" 6)" \
            "$(field caddy "$row" 6)" \
            "$(ratio "$(field nginx "$row" 6)" "$(field mta-stsd "$row" 6)")" \
            "$(ratio "$(field caddy "$row" 6)" "$(field mta-stsd "$row" 6)")" \
            "$(field mta-stsd "$row" 5)/$(field nginx "$row" 5)/$(field caddy "$row" 5)"
    done
    echo
fi
if ((MEMORY)); then
    base=${M[0]:-}
    base_rss=$(awk '{ print $2 }' <<<"$base")
    printf '| %-10s | %-12s | %-12s | %-16s |\n' tenants "startup s" "VmRSS MiB" "KiB per tenant"
    printf '|%s|%s|%s|%s|\n' "------------" "--------------" "--------------" "------------------"
    for count in 0 $TENANT_COUNTS; do
        read -r secs rss <<<"${M[$count]}"
        per=$(awk -v r="$rss" -v b="$base_rss" -v n="$count" 'BEGIN { if (n == 0) print "-"; else printf "%.2f", (r - b) / n }')
        printf '| %-10s | %-12s | %-12s | %-16s |\n' "$count" "$secs" \
            "$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')" "$per"
    done
fi
