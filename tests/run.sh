#!/usr/bin/env bash
# Runs vpcsh's whole test suite: unit tests, and integration tests that build real
# topologies inside sandboxes (namespaces named vt<pid>-..., removed by each test).
#
# As root it installs the few tools the tests use to look at the kernel from outside
# (iproute2, ping, nft, script) and to imitate other firewalls (iptables) when they are
# missing; vpcsh itself needs none of them. As an ordinary user it asks for them instead,
# and runs the suite inside a user namespace of its own (root there, with its own network
# and /run): nothing on the machine changes, and no sudo is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: two test threads keep the kernel tests bounded and the run predictable.
run_suite() {
  local status=0
  cargo test --locked -- --test-threads="${VPCSH_TEST_THREADS:-2}" || status=$?
  wait_for_reapers
  exit "$status"
}

# Namespaces the tests deleted go, still open, to vpcsh's background reapers (`vpcsh
# __reap`, see docs/usage.md): wait until this build's reapers have let every one go, so
# the run leaves nothing behind.
wait_for_reapers() {
  local deadline=$((SECONDS + 300)) cmd busy
  while [ "$SECONDS" -lt "$deadline" ]; do
    busy=
    for cmd in /proc/[0-9]*/cmdline; do
      if tr '\0' ' ' 2>/dev/null < "$cmd" | grep -q "^$PWD/target/[^ ]*/vpcsh __reap "; then
        busy=1
        break
      fi
    done
    [ -z "$busy" ] && return
    sleep 1
  done
  echo "tests/run.sh: vpcsh reapers still at work after 5 minutes" >&2
}

if [ "${1:-}" = --in-user-namespace ]; then
  # A /run of the namespace's own, where `ip netns` keeps its names.
  mount -t tmpfs -o mode=755 tmpfs /run
  mkdir /run/netns
  ip link set lo up
  run_suite
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v nft >/dev/null || need+=(nftables)
command -v script >/dev/null || need+=(bsdutils)
command -v iptables-nft >/dev/null || need+=(iptables)
# FRR for the EVPN fabric tests; as root only (its daemons drop to their own user, which a
# user namespace of one's own does not have: there the tests check vpcsh says so).
if [ "$(id -u)" = 0 ] && [ ! -x /usr/lib/frr/bgpd ]; then need+=(frr); fi

if [ "$(id -u)" != 0 ]; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "tests/run.sh: the tests look at the kernel with tools this machine lacks: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  if ! unshare --user --map-root-user true 2>/dev/null; then
    echo "tests/run.sh: this machine allows no unprivileged user namespaces: run the tests as root (sudo $0)," >&2
    echo "  or allow them (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)" >&2
    exit 1
  fi
  # Build first, with the machine's network (the namespace below has none).
  cargo test --locked --no-run
  CARGO_NET_OFFLINE=true exec unshare --user --map-root-user --net --mount --propagation private -- bash tests/run.sh --in-user-namespace
fi

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
run_suite
