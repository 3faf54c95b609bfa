#!/usr/bin/env bash
# Installs the Debian packages Eagle's tests, demo and benchmarks run against.
# Idempotent: asks apt only for what is missing, and runs `apt-get update` only then.
set -euo pipefail

packages=(
  docker-registry   # the origin registry in tests and the demo
  skopeo            # the OCI client that pulls through agents
  redis-server      # shared tracker peer store
  aria2             # stock BitTorrent client for interop tests
  opentracker       # stock tracker for interop tests
  wrk               # HTTP load generator for the tracker benchmark
  iproute2          # network namespaces and tc for the swarm testbed
  containerd        # runtime tests: ctr pulls through the agent; dockerd's runtime
  docker.io         # runtime tests: dockerd pulls through the agent (mirror and proxy)
  podman            # runtime tests: podman pull through the agent's mirror
  util-linux        # nsenter/unshare: runtimes inside test namespaces, private /etc/docker
  python3-venv python3-dev gcc
  ca-certificates curl
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-system: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep maintainer scripts from starting services (docker.io and containerd would run as
# system daemons otherwise); tests start their own instances with temporary roots.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts these as services on install; our tests start their own instances.
for svc in docker-registry redis-server opentracker docker.socket docker containerd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
