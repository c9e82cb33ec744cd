#!/usr/bin/env bash
# Installs everything localvol needs to build, run and test, from Debian 12.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang
  # scripts/lint.sh: the format and lint checks
  clang-format clang-tidy
  libfuse3-dev fuse3 liburing-dev libblkid-dev libspdlog-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  xfsprogs e2fsprogs util-linux acl attr fio python3
  # deploy/kubernetes/validate.py (ctest deploy_manifests)
  python3-yaml
  # the node agent (agent/): gRPC API, YAML config, sd_notify, CLI parsing,
  # Prometheus metrics; systemd provides systemd-analyze for the unit-file test
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsystemd-dev libcli11-dev prometheus-cpp-dev systemd
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# FUSE needs its device.
[ -e /dev/fuse ] || modprobe fuse
