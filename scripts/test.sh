#!/usr/bin/env bash
# Runs c4m's whole test suite on a fresh Debian machine with Rust:
# installs what the tests need, then builds once and tests once.
#
#   ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run besides c4m itself: a shell and coreutils for
# instance commands, procps, and curl (the quickstart).
# bsdutils: `script` (a terminal for kubectl exec -it); util-linux: `setsid -c`
# (the process driver's exec on a terminal); python3: a bulk TCP server in
# kubectl_stream.rs. For the oci driver, the image store and the quickstart
# (which runs the example in containers): runc and crun
# (OCI runtimes), conmon (the container monitor), busybox-static (test
# images), skopeo (docker archives, pushes) and docker-registry (a registry
# on loopback), apache2-utils (htpasswd: a registry that insists on a login,
# for imagePullSecrets in pod_spec.rs); tar. For the instance network tests: iproute2, nftables,
# util-linux (nsenter: agents on simulated hosts) and mount (umount); for CNI networks containernetworking-plugins (bridge,
# host-local, portmap in /usr/lib/cni) and iptables (which portmap and
# bridge's ipMasq drive). For the driver conformance suite: containerd (also
# its CRI service) and docker.io (dockerd), which the tests start themselves
# on sockets of their own. protobuf-compiler: `protoc`, which the
# containerd-client crate's build script runs to compile containerd's API.
# For c4m-storage's root tests (tests/local.rs, crash.rs, csi.rs, nfs.rs)
# and its bench (examples/storage_bench.rs): e2fsprogs (mkfs.ext4, e2fsck,
# resize2fs for loop+ext4 volumes), util-linux (losetup, fsfreeze for
# snapshots of mounted volumes, unshare for the NFS server's namespaces),
# fuse3 (/dev/fuse and fusermount3 for the FUSE NFS mount), nfs-ganesha and
# nfs-ganesha-vfs (the NFSv3 server tests/nfs.rs starts on loopback), rpcbind
# (ganesha will not start without registering with it), fio (the bench's
# throughput figures). redis-server: the database the StatefulSet e2e test
# (bins/tests/e2e/statefulsets.rs) runs in containers, from an image built of
# the host's binary and the libraries it loads.
packages=(procps coreutils curl ca-certificates bsdutils util-linux python3 tar runc crun conmon busybox-static skopeo docker-registry apache2-utils iproute2 nftables mount containerd docker.io containernetworking-plugins iptables protobuf-compiler e2fsprogs fuse3 nfs-ganesha nfs-ganesha-vfs rpcbind fio redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# kubectl, which bins/tests/kubectl.rs drives. It is not in Debian's main
# archive at a usable version (bookworm's kubernetes-client is 1.20); the
# `kubectl` package comes from Kubernetes' (pkgs.k8s.io) or Google Cloud's
# apt repository where one is configured. Without it those tests fail,
# saying so: they are never skipped.
if ! [ -x /usr/bin/kubectl ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  if apt-cache show kubectl >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubectl
  fi
  if ! [ -x /usr/bin/kubectl ]; then
    echo "error: kubectl is not installed and no configured apt repository has it:" >&2
    echo "  bins/tests/kubectl.rs will fail. Add https://pkgs.k8s.io/core:/stable:/v1.32/deb/" >&2
    echo "  as an apt source (or put kubectl 1.32 at /usr/bin/kubectl) and run again." >&2
  fi
fi
# The official Kubernetes Python client, which bins/tests/python_client.rs
# drives, in a virtual environment of its own (the system's packages stay
# as they are).
venv=target/test-python
if ! "$venv/bin/python3" -c 'import kubernetes' >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A CI machine builds once: incremental compilation only costs time and
# disk there.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "warning: rustfmt is not available: formatting NOT checked" >&2
fi
# Lints first: they share the build with the tests (the same dev profile,
# so what clippy checks is not compiled twice).
cargo clippy --workspace --all-targets --locked -- -D warnings
# --all-targets also builds the criterion benches, the examples and runs
# each once. --include-ignored: the tests that need root, daemons or
# programs beyond a plain Linux machine (marked #[ignore = "needs ..."],
# skipped by a plain `cargo test`) run here too; the packages above are
# what they need. The end-to-end tests mostly wait on processes: run more
# than one per core. --no-fail-fast: one run reports every failing test.
RUST_TEST_THREADS=4 cargo test --workspace --all-targets --locked --no-fail-fast -- --include-ignored
# --all-targets leaves out the doc tests: the crates' front-page examples.
cargo test --workspace --doc --locked --no-fail-fast
