#!/usr/bin/env bash
# A two-node Swarm on this one machine: the host engine as the manager, and a second
# Docker engine in a network namespace of this script's own, joined as a worker.
#
#   host  -- veth 10.231.77.1/30 <-> 10.231.77.2/30 -- netns berth-worker-PID
#            (dockerd)                                 (dockerd, hostname berth-worker)
#
#   scripts/swarm-two-node.sh          try it: one service constrained to the worker
#                                      (node.hostname == berth-worker) on an overlay
#                                      network, its port published in host mode, asked
#                                      from the host over the veth; then remove it all
#   scripts/swarm-two-node.sh up DIR   make the two nodes and leave them up; DIR/env says
#                                      what was made (tests/e2e_swarm_two_node.rs)
#   scripts/swarm-two-node.sh down DIR remove what `up DIR` made
#
# Removed on exit (or by `down`): the swarm (only when this script created it), the
# second dockerd and its directories, the netns and veth. Refuses to run when the host
# engine is already in a swarm (Swarm is engine-wide: the e2e swarm tests may be using
# it), exit 2. Needs root, ip(8), nsenter(1), unshare(1), dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-try}
ns=berth-worker-$$
veth_host=bwh$$
veth_worker=bww$$
host_addr=10.231.77.1
worker_addr=10.231.77.2
case $mode in
  try) dir=$(mktemp -d /tmp/berth-worker.XXXXXX) ;;
  up | down) dir=${2:?"usage: $0 up|down DIR"} ;;
  *) echo "usage: $0 [up DIR | down DIR]" >&2; exit 64 ;;
esac
sock=$dir/docker.sock
wdocker() { docker -H "unix://$sock" "$@"; }
created_swarm=
made_gwbridge=
service=berth-two-node-probe
network=berth-two-node-net

step() { echo "== $*"; }
cleanup() {
  set +e
  docker service rm "$service" >/dev/null 2>&1
  sleep 1
  docker network rm "$network" >/dev/null 2>&1
  if [ -S "$sock" ]; then
    wdocker swarm leave --force >/dev/null 2>&1
  fi
  if [ -f "$dir/docker.pid" ]; then
    local pid
    pid=$(cat "$dir/docker.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  if [ -n "$created_swarm" ]; then
    docker swarm leave --force >/dev/null 2>&1
    [ -n "$made_gwbridge" ] && docker network rm docker_gwbridge >/dev/null 2>&1
  fi
  # A mount left under the data root (fuse-overlayfs, netns files) would keep rm from
  # removing it.
  grep -o " $dir[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  ip link del "$veth_host" 2>/dev/null
  # `up DIR`'s directory is the caller's: only what this script put in it goes.
  if [ "$mode" = try ]; then rm -rf "$dir"; else rm -rf "$dir/data" "$dir/exec"; fi
  step "cleaned up"
}
if [ "$mode" = down ]; then
  [ -f "$dir/env" ] || exit 0
  # shellcheck disable=SC1091
  . "$dir/env"
  sock=$dir/docker.sock
  cleanup
  exit 0
fi
trap cleanup EXIT

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != inactive ]; then
  echo "the host engine is already in a swarm ($state): not touching it" >&2
  exit 2
fi

step "netns $ns and veth $veth_host <-> $veth_worker"
ip netns add "$ns"
# What `down` removes.
printf 'ns=%s\nveth_host=%s\n' "$ns" "$veth_host" >"$dir/env"
ip link add "$veth_host" type veth peer name "$veth_worker"
ip link set "$veth_worker" netns "$ns"
ip addr add "$host_addr/30" dev "$veth_host"
ip link set "$veth_host" up
ip netns exec "$ns" ip addr add "$worker_addr/30" dev "$veth_worker"
ip netns exec "$ns" ip link set "$veth_worker" up
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip route get "$host_addr" >/dev/null

step "second dockerd in $ns ($dir)"
# Its own UTS namespace gives it a hostname of its own (node.hostname); its own
# containerd namespace keeps its containers apart from the host engine's if both use
# the system containerd.
# A config file of its own: the host's /etc/docker/daemon.json names the host's data root.
echo '{"storage-driver": "fuse-overlayfs", "mtu": 1400}' >"$dir/daemon.json"
# nsenter, not `ip netns exec`: that one mounts a fresh /sys, which hides the cgroup
# mounts dockerd needs ("Devices cgroup isn't mounted").
nsenter --net="/var/run/netns/$ns" unshare --uts sh -c "hostname berth-worker; exec dockerd \
  --config-file '$dir/daemon.json' --data-root '$dir/data' --exec-root '$dir/exec' --pidfile '$dir/docker.pid' \
  -H 'unix://$sock' --bridge=none --iptables=false --ip-masq=false \
  --containerd-namespace berth-worker \
  --containerd-plugins-namespace berth-worker-plugins --cgroup-parent berth-worker" \
  >"$dir/dockerd.log" 2>&1 &
for _ in $(seq 100); do wdocker info >/dev/null 2>&1 && break; sleep 0.3; done
if ! wdocker info >/dev/null 2>&1; then
  echo "the second dockerd did not come up; its log:" >&2
  tail -20 "$dir/dockerd.log" >&2
  exit 1
fi
wdocker info --format 'worker engine {{.ServerVersion}}, {{.Driver}}, hostname {{.Name}}'

step "swarm init on the host (advertise $host_addr) and join the worker"
# swarm init makes docker_gwbridge, which outlives the swarm: removed again if made here.
docker network inspect docker_gwbridge >/dev/null 2>&1 || made_gwbridge=1
docker swarm init --advertise-addr "$host_addr" --listen-addr "$host_addr:2377" >/dev/null
created_swarm=1
printf 'created_swarm=1\nmade_gwbridge=%s\n' "$made_gwbridge" >>"$dir/env"
token=$(docker swarm join-token -q worker)
wdocker swarm join --token "$token" --advertise-addr "$worker_addr" --listen-addr "$worker_addr:2377" "$host_addr:2377"
docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}'
if [ "$mode" = up ]; then
  trap - EXIT
  step "up: the worker engine at unix://$sock, netns $ns"
  exit 0
fi

step "the fixture image on the worker (save | load; no registry in this smoke)"
docker save berth-fixture:test | wdocker load -q

step "a service on the worker, on an overlay network, probe port in host mode"
docker network create -d overlay "$network" >/dev/null
docker service create -q --detach --no-resolve-image --name "$service" --network "$network" \
  --constraint node.hostname==berth-worker --publish mode=host,target=8080 \
  berth-fixture:test >/dev/null
port=
for _ in $(seq 60); do
  port=$(docker service ps "$service" --filter desired-state=running --format '{{.Ports}}' |
    grep -o '\*:[0-9]*' | head -1 | cut -d: -f2 || true)
  state=$(docker service ps "$service" --filter desired-state=running --format '{{.Node}} {{.CurrentState}} {{.Error}}' | head -1)
  [ -n "$port" ] && [[ $state == *Running* ]] && break
  sleep 1
done
echo "task: $state, published port ${port:-none}"
docker service ps "$service" --no-trunc --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}'
[ -n "$port" ] || { echo "no published port: the task did not run on the worker" >&2; exit 1; }
step "GET http://$worker_addr:$port/health from the host"
curl -fsS --max-time 5 "http://$worker_addr:$port/health"
echo
step "two nodes work here"
