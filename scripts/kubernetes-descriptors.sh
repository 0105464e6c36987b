#!/usr/bin/env bash
# Rebuilds c4m-api/src/kubernetes.binpb, the descriptor set the
# API uses to speak Kubernetes' protobuf (application/vnd.kubernetes.protobuf).
#
# Usage: scripts/kubernetes-descriptors.sh PROTOS_DIR
# PROTOS_DIR holds Kubernetes' generated.proto files laid out as kube-rs/k8s-pb
# keeps them (k8s-pb-codegen/protos: api/, apimachinery/, metrics/, with the
# `k8s.io.` prefix taken off the package names). Needs protoc
# (Debian: protobuf-compiler). Only stable versions (v1, v2) of the API
# groups are taken, plus metrics.k8s.io/v1beta1 and meta/v1; comments are
# left out (no --include_source_info), so the file is the schema alone.
set -euo pipefail
protos=${1:?usage: $0 PROTOS_DIR}
out="$(cd "$(dirname "$0")/.." && pwd)/c4m-api/src/kubernetes.binpb"
cd "$protos"
mapfile -t files < <(find api -name generated.proto | grep -E '/v[0-9]+/generated.proto$' | sort)
files+=(metrics/pkg/apis/metrics/v1beta1/generated.proto apimachinery/pkg/apis/meta/v1/generated.proto)
protoc -I. --include_imports --descriptor_set_out="$out" "${files[@]}" 2>/dev/null
echo "wrote $out ($(wc -c <"$out") bytes, ${#files[@]} files and their imports)"
