#!/usr/bin/env bash
# Runs vpcsh's whole test suite: unit tests, and integration tests that build real
# topologies inside sandboxes (namespaces named vt<pid>-..., removed by each test).
# Needs root for the kernel tests. Installs the few tools the tests use to look at the
# kernel from outside (iproute2, ping, nft) and to imitate other firewalls (iptables)
# when they are missing and apt-get is
# there; vpcsh itself needs none of them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: the kernel tests make network namespaces: run it as root (sudo $0)" >&2
  exit 1
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v nft >/dev/null || need+=(nftables)
command -v script >/dev/null || need+=(bsdutils)
command -v iptables-nft >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "tests/run.sh: please install ${need[*]}" >&2
    exit 1
  fi
fi

# Two cores: two test threads keep the kernel tests bounded and the run predictable.
exec cargo test --locked -- --test-threads="${VPCSH_TEST_THREADS:-2}"
