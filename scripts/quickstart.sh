#!/usr/bin/env bash
# Starts a single-node c4m (control plane + agent in one process) and deploys
# the example shop (examples/shop): a catalog Microservice and a web
# Deployment + Service that calls the catalog by DNS name.
#
#   ./scripts/quickstart.sh
#
# Environment: C4M_HOME (state, default ~/.c4m), C4M_BIN_DIR (use built
# binaries instead of building), C4M_UP_ARGS (extra `c4m up` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

export C4M_HOME="${C4M_HOME:-$HOME/.c4m}"
if [ -z "${C4M_BIN_DIR:-}" ]; then
  echo "==> building c4m (release)"
  cargo build --release --locked --bins
  C4M_BIN_DIR=target/release
fi
PATH="$(cd "$C4M_BIN_DIR" && pwd):$PATH"
export PATH
mkdir -p "$C4M_HOME"

pidfile="$C4M_HOME/c4m.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "==> c4m is already running (pid $(cat "$pidfile"))"
else
  echo "==> starting c4m (log: $C4M_HOME/c4m.log)"
  # shellcheck disable=SC2086
  nohup c4m up --data-dir "$C4M_HOME" ${C4M_UP_ARGS:-} >"$C4M_HOME/c4m.log" 2>&1 &
  echo $! >"$pidfile"
fi

for _ in $(seq 1 150); do
  c4m get nodes >/dev/null 2>&1 && break
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "c4m exited; its log says:" >&2
    tail -20 "$C4M_HOME/c4m.log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "==> deploying examples/shop"
c4m apply -f examples/shop/
c4m wait --timeout 90s
echo
c4m get instances
echo
c4m get endpoints
web=$(c4m get endpoints web -o json | sed -n 's/.*"ip": "\([^"]*\)".*/\1/p' | head -1)
port=$(c4m get endpoints web -o json | sed -n 's/.*"port": \([0-9]*\).*/\1/p' | head -1)
if [ -n "$web" ] && [ -n "$port" ] && command -v curl >/dev/null; then
  echo
  echo "==> curl http://$web:$port/ (web calls catalog.default.svc.c4m)"
  curl -fsS "http://$web:$port/"
fi
cat <<MSG

c4m is running (pid $(cat "$pidfile")). Try:
  export PATH="$(cd "$C4M_BIN_DIR" && pwd):\$PATH"
  c4m get microservices; c4m get deployments; c4m describe instance NAME; c4m logs -f NAME
Remove the example and stop c4m:  c4m delete -f examples/shop/ && kill $(cat "$pidfile")
(Stopping c4m alone leaves instances running; the next \`c4m up\` adopts them.)
MSG
