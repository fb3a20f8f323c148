#!/usr/bin/env bash
# The whole system on one machine: a server on SQLite, an agent attested with a join token,
# and this shell as a workload receiving its X509-SVID and a JWT-SVID over the Workload API.
#
#   contrib/quickstart.sh          run the demo, then stop both daemons
#   contrib/quickstart.sh --keep   leave them running (stop with: kill $(cat .quickstart/*.pid))
#
# Everything lives in .quickstart/ (or $PYSPIRE_QUICKSTART_DIR: configs, data, sockets, logs);
# the virtualenv is .venv (or $PYSPIRE_VENV). Ports are chosen free at start.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

venv=${PYSPIRE_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    python3 -m venv "$venv"
fi
echo "== installing pyspire and the unix workload attestor"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . -e plugins/unix_workload
bin="$PWD/$venv/bin"
case "$venv" in /*) bin="$venv/bin" ;; esac

work=${PYSPIRE_QUICKSTART_DIR:-$PWD/.quickstart}
if [ -d "$work" ]; then
    for pidfile in "$work"/*.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 1
    rm -rf "$work"
fi
mkdir -p "$work"
free_port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
server_port=$(free_port)
server_socket="$work/server/api.sock"
agent_socket="$work/agent/public/api.sock"

sed -e "s|bind_port = \"8081\"|bind_port = \"$server_port\"|" \
    -e "s|/tmp/spire-server/private/api.sock|$server_socket|" \
    -e "s|./.data/server|$work/server/data|g" \
    -e "s|listener_enabled = true|listener_enabled = false|" \
    contrib/conf/server.conf > "$work/server.conf"
sed -e "s|server_port = \"8081\"|server_port = \"$server_port\"|" \
    -e "s|/tmp/spire-agent/public/api.sock|$agent_socket|" \
    -e "s|./.data/agent|$work/agent/data|g" \
    -e "s|listener_enabled = true|listener_enabled = false|" \
    contrib/conf/agent.conf > "$work/agent.conf"

stop_all() {
    for pidfile in "$work"/*.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -f "$work"/*.pid
}
fail() {
    echo "quickstart failed: $1" >&2
    echo "--- server log" >&2; tail -20 "$work/server.log" >&2 || true
    echo "--- agent log" >&2; tail -20 "$work/agent.log" >&2 || true
    stop_all
    exit 1
}
wait_for_socket() {
    for _ in $(seq 1 150); do
        [ -S "$1" ] && return 0
        sleep 0.2
    done
    return 1
}

echo "== starting the server (trust domain example.org, port $server_port)"
"$bin/pyspire-server" run -config "$work/server.conf" > "$work/server.log" 2>&1 &
echo $! > "$work/server.pid"
wait_for_socket "$server_socket" || fail "the server did not start"
"$bin/pyspire-server" healthcheck -socketPath "$server_socket"

node_id="spiffe://example.org/node/quickstart"
token=$("$bin/pyspire-server" token generate -socketPath "$server_socket" -spiffeID "$node_id" | awk '/^Token:/ {print $2}')
mkdir -p "$work/agent/data"
"$bin/pyspire-server" bundle show -socketPath "$server_socket" > "$work/agent/data/bundle.pem"
echo "== registering this shell's user (uid $(id -u)) as spiffe://example.org/quickstart/workload"
"$bin/pyspire-server" entry create -socketPath "$server_socket" \
    -parentID "$node_id" -spiffeID spiffe://example.org/quickstart/workload -selector "unix:uid:$(id -u)"

echo "== starting the agent (join token $token)"
"$bin/pyspire-agent" run -config "$work/agent.conf" -joinToken "$token" > "$work/agent.log" 2>&1 &
echo $! > "$work/agent.pid"
wait_for_socket "$agent_socket" || fail "the agent did not start"

echo "== fetching this workload's X509-SVID from the Workload API"
fetched=false
for _ in $(seq 1 50); do
    if "$bin/pyspire-agent" api fetch x509 -socketPath "$agent_socket" -write "$work/svid" 2>/dev/null; then
        fetched=true
        break
    fi
    sleep 0.2
done
$fetched || fail "no SVID was issued"
if command -v openssl > /dev/null; then
    echo "== openssl verifies the SVID against the trust bundle"
    openssl verify -CAfile "$work/svid/bundle.0.pem" "$work/svid/svid.0.pem"
fi
echo "== fetching a JWT-SVID for audience 'demo' and validating it through the agent"
jwt=$("$bin/pyspire-agent" api fetch jwt -socketPath "$agent_socket" -audience demo -output json \
    | "$bin/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["svids"][0]["svid"])')
"$bin/pyspire-agent" api validate jwt -socketPath "$agent_socket" -audience demo -svid "$jwt"

if $keep; then
    echo
    echo "Server and agent keep running. Try:"
    echo "  $bin/pyspire-agent api watch -socketPath $agent_socket"
    echo "  SPIFFE_ENDPOINT_SOCKET=unix://$agent_socket <your workload>"
    echo "Stop them with: kill \$(cat $work/*.pid)"
else
    stop_all
    echo
    echo "Quickstart complete: server and agent stopped (logs in $work/)."
fi
