#!/usr/bin/env bash
# Starts a single-node c4m (control plane + agent in one process) and deploys
# the example shop (examples/shop) in real containers: a catalog Microservice
# and a web Deployment + Service that calls the catalog by DNS name. Each
# instance runs in its own container (runc under conmon, no Docker or
# containerd) with its own IP in the default VPC, from an image built here
# from Debian's busybox-static and c4m-demo: no registry, no internet.
#
#   ./scripts/quickstart.sh      # as root
#
# Needs root and a Linux kernel with overlayfs; installs what it runs with
# (runc, conmon, busybox-static, nftables, iproute2, curl) when missing.
# Environment: C4M_HOME (state, default ~/.c4m), C4M_BIN_DIR (use built
# binaries instead of building), C4M_UP_ARGS (extra `c4m up` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "error: $*" >&2
  exit 1
}

# Containers need namespaces, cgroups, nftables and overlay mounts.
if [ "$(id -u)" -ne 0 ]; then
  fail "the quickstart runs real containers, which needs root (namespaces, overlayfs, cgroups, nftables): run it with sudo"
fi
if ! grep -qw overlay /proc/filesystems; then
  modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems ||
    fail "this kernel has no overlayfs (not in /proc/filesystems, modprobe overlay failed): containers cannot run here"
fi

packages=(runc conmon busybox-static nftables iproute2 curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "install ${missing[*]} (no apt-get here)"
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export C4M_HOME="${C4M_HOME:-$HOME/.c4m}"
if [ -z "${C4M_BIN_DIR:-}" ]; then
  command -v cargo >/dev/null ||
    fail "cargo is not on PATH (from a user shell: sudo -E env \"PATH=\$PATH\" ./scripts/quickstart.sh)"
  echo "==> building c4m (release)"
  cargo build --release --locked --bins
  C4M_BIN_DIR=target/release
fi
C4M_BIN_DIR="$(cd "$C4M_BIN_DIR" && pwd)"
PATH="$C4M_BIN_DIR:$PATH"
export PATH
mkdir -p "$C4M_HOME"

pidfile="$C4M_HOME/c4m.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "==> c4m is already running (pid $(cat "$pidfile"))"
else
  echo "==> starting c4m with instance networking (log: $C4M_HOME/c4m.log)"
  # shellcheck disable=SC2086
  nohup c4m up --data-dir "$C4M_HOME" --instance-network ${C4M_UP_ARGS:-} >"$C4M_HOME/c4m.log" 2>&1 &
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
for _ in $(seq 1 150); do
  c4m get nodes 2>/dev/null | grep -qw Ready && break
  sleep 0.2
done

echo "==> building the example's image shop:1 (busybox-static + c4m-demo, no registry)"
c4m image build shop:1 --busybox /bin/busybox --add "$C4M_BIN_DIR/c4m-demo"

echo "==> deploying examples/shop"
c4m apply -f examples/shop/
c4m wait --timeout 90s
echo
c4m get instances
echo
c4m get endpoints

web=$(c4m get instances -l app=web | awk 'NR == 2 { print $1 }')
echo
echo "==> inside instance $web: its host name, its processes, and a call to catalog by DNS name"
c4m exec "$web" -- hostname
c4m exec "$web" -- ps
c4m exec "$web" -- c4m-demo --call catalog
ip=$(c4m get endpoints web -o json | sed -n 's/.*"ip": "\([^"]*\)".*/\1/p' | head -1)
port=$(c4m get endpoints web -o json | sed -n 's/.*"port": \([0-9]*\).*/\1/p' | head -1)
if [ -n "$ip" ] && [ -n "$port" ]; then
  echo
  echo "==> curl http://$ip:$port/ (a web instance's own address; it calls catalog.default.svc.c4m)"
  curl -fsS "http://$ip:$port/"
fi
cat <<MSG

c4m is running (pid $(cat "$pidfile")). Try:
  export PATH="$C4M_BIN_DIR:\$PATH"
  c4m get microservices; c4m get deployments; c4m describe instance $web; c4m logs -f $web
  c4m exec -it $web -- sh
Remove the example and stop c4m:  c4m delete -f examples/shop/ && kill $(cat "$pidfile")
(Stopping c4m alone leaves instances running; the next \`c4m up\` adopts them.)
MSG
