#!/usr/bin/env bash
# baseline-ip.sh V S     -- bring up V VPCs x S subnets the way the original tool did
# baseline-ip.sh --down  -- tear the last bring-up down, then its sandbox
#
# vpcsh grew from a student tool (vpcctl) that ran one `ip`/`iptables` command per step.
# This script does the same topology that way, so `cargo bench --bench apply` can compare
# vpcsh with it side by side. Everything happens in sandbox namespaces: bl-root-PID plays
# the machine (bridges, iptables, forwarding), bl-inet-PID the internet at 198.51.100.1, and
# subnet namespaces hang off the bridges. The machine's own network is never touched: the
# per-step part re-runs itself inside bl-root-PID and refuses to run anywhere else.
#
# Topology: VPC v (1..V) = 10.v.0.0/16 on bridge br-v (10.v.0.1); subnet s (1..S) =
# 10.v.s.0/24, namespace bl-PID-v-s with eth0 10.v.s.10; odd s public (MASQUERADE out up0),
# even s private (FORWARD drop out up0); FORWARD drops between every pair of VPC bridges.
# Prints `up_ms=N` (bring-up) or `down_ms=N` (teardown) on stdout.
# Env: BL_STATE, the state file (default /tmp/vpcsh-baseline.state).
set -u
SELF=$(readlink -f "$0")
STATE=${BL_STATE:-/tmp/vpcsh-baseline.state}

now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
step() { "$@" || { echo "baseline: failed: $*" >&2; exit 1; }; }
public() { [ $(( $1 % 2 )) -eq 1 ]; }

inside_sandbox() {   # refuse unless this process's netns is the sandbox's
  [ "$(stat -L -c %i "/run/netns/$1")" = "$(stat -L -c %i /proc/self/ns/net)" ] &&
    [ "$(stat -L -c %i /proc/self/ns/net)" != "${BL_HOST_NETNS:-}" ] ||
    { echo "baseline: not inside sandbox $1; refusing" >&2; exit 3; }
}

inner_up() {   # V S PID, run inside bl-root-PID
  local V=$1 S=$2 P=$3 v u s ns
  inside_sandbox "bl-root-$P"
  for ((v = 1; v <= V; v++)); do
    step ip link add "br-$v" type bridge
    step ip addr add "10.$v.0.1/16" dev "br-$v"
    step ip link set "br-$v" up
    step sysctl -qw net.ipv4.ip_forward=1
    for ((u = 1; u < v; u++)); do
      step iptables -A FORWARD -i "br-$v" -o "br-$u" -j DROP
      step iptables -A FORWARD -i "br-$u" -o "br-$v" -j DROP
    done
    for ((s = 1; s <= S; s++)); do
      ns="bl-$P-$v-$s"
      step ip netns add "$ns"
      step ip link add "veth-$v-$s" type veth peer name "vp-$v-$s"
      step ip link set "vp-$v-$s" netns "$ns"
      step ip netns exec "$ns" ip link set "vp-$v-$s" name eth0
      step ip link set "veth-$v-$s" master "br-$v"
      step ip link set "veth-$v-$s" up
      step ip netns exec "$ns" ip addr add "10.$v.$s.10/24" dev eth0
      step ip netns exec "$ns" ip link set eth0 up
      step ip netns exec "$ns" ip link set lo up
      step ip netns exec "$ns" ip route add default via "10.$v.0.1" dev eth0 onlink
      if public "$s"; then
        step iptables -t nat -A POSTROUTING -s "10.$v.$s.0/24" -o up0 -j MASQUERADE
        step iptables -A FORWARD -s "10.$v.$s.0/24" -o up0 -j ACCEPT
        step iptables -A FORWARD -d "10.$v.$s.0/24" -i up0 -j ACCEPT
      else
        step iptables -A FORWARD -s "10.$v.$s.0/24" -o up0 -j DROP
      fi
    done
  done
}

inner_down() {   # V S PID, run inside bl-root-PID; like the original, goes on past errors
  local V=$1 S=$2 P=$3 v u s
  inside_sandbox "bl-root-$P"
  for ((v = 1; v <= V; v++)); do
    for ((s = 1; s <= S; s++)); do
      if public "$s"; then
        iptables -t nat -D POSTROUTING -s "10.$v.$s.0/24" -o up0 -j MASQUERADE
        iptables -D FORWARD -s "10.$v.$s.0/24" -o up0 -j ACCEPT
        iptables -D FORWARD -d "10.$v.$s.0/24" -i up0 -j ACCEPT
      else
        iptables -D FORWARD -s "10.$v.$s.0/24" -o up0 -j DROP
      fi
      ip link delete "veth-$v-$s"
      ip netns delete "bl-$P-$v-$s"
    done
    for ((u = v + 1; u <= V; u++)); do
      iptables -D FORWARD -i "br-$u" -o "br-$v" -j DROP
      iptables -D FORWARD -i "br-$v" -o "br-$u" -j DROP
    done
    ip link set "br-$v" down
    ip link delete "br-$v"
  done
}

up() {
  local V=$1 S=$2 P=$$ t0
  [[ $V =~ ^[0-9]+$ && $S =~ ^[0-9]+$ && $V -ge 1 && $V -le 250 && $S -ge 1 && $S -le 250 ]] ||
    { echo "usage: $0 V S (1..250 each) | --down" >&2; exit 2; }
  [ -e "$STATE" ] && { echo "baseline: $STATE exists: run $0 --down first" >&2; exit 2; }
  # The state first, so --down can always remove exactly what was made.
  printf 'P=%s\nV=%s\nS=%s\n' "$P" "$V" "$S" > "$STATE"
  step ip netns add "bl-root-$P"
  step ip netns add "bl-inet-$P"
  step ip -n "bl-root-$P" link set lo up
  step ip -n "bl-root-$P" link add up0 type veth peer name eth0 netns "bl-inet-$P"
  step ip -n "bl-root-$P" addr add 198.51.100.2/24 dev up0
  step ip -n "bl-root-$P" link set up0 up
  step ip -n "bl-inet-$P" addr add 198.51.100.1/24 dev eth0
  step ip -n "bl-inet-$P" link set eth0 up
  t0=$(now_ms)
  BL_HOST_NETNS=$(stat -L -c %i /proc/self/ns/net) \
    nsenter --net="/run/netns/bl-root-$P" -- "$SELF" --inner-up "$V" "$S" "$P" || exit 1
  echo "up_ms=$(( $(now_ms) - t0 )) subnets=$(( V * S ))"
}

down() {
  local P V S t0 v s
  [ -e "$STATE" ] || { echo "baseline: no $STATE: nothing to tear down" >&2; exit 2; }
  # shellcheck disable=SC1090
  . "$STATE"
  t0=$(now_ms)
  if [ -e "/run/netns/bl-root-$P" ]; then
    BL_HOST_NETNS=$(stat -L -c %i /proc/self/ns/net) \
      nsenter --net="/run/netns/bl-root-$P" -- "$SELF" --inner-down "$V" "$S" "$P" 2>/dev/null
  fi
  echo "down_ms=$(( $(now_ms) - t0 ))"
  # Whatever a partial bring-up left, by exact name, then the sandbox.
  for ((v = 1; v <= V; v++)); do for ((s = 1; s <= S; s++)); do
    [ -e "/run/netns/bl-$P-$v-$s" ] && ip netns delete "bl-$P-$v-$s"
  done; done
  for ns in "bl-inet-$P" "bl-root-$P"; do [ -e "/run/netns/$ns" ] && ip netns delete "$ns"; done
  rm -f "$STATE"
}

case "${1:-}" in
  --inner-up) shift; inner_up "$@" ;;
  --inner-down) shift; inner_down "$@" ;;
  --down) down ;;
  "" | -h | --help) sed -n 2,16p "$SELF"; exit 2 ;;
  *) up "$@" ;;
esac
