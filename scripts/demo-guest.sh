#!/usr/bin/env bash
# Runs inside the VM (scripts/demo starts it). Prints each step before doing it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
plugin="$root/target/release/netkit-cni"
step() { printf '\n==> %s\n' "$*"; }
ynl() { /usr/bin/python3 "$NKC_KERNEL_SRC/tools/net/ynl/pyynl/cli.py" --no-schema "$@"; }

step "Kernel in the VM"
uname -r

step "Create a netdevsim NIC with 8 queues (stands in for a physical NIC such as mlx5)"
echo "4242 1 8" >/sys/bus/netdevsim/new_device
for _ in $(seq 100); do ls /sys/bus/netdevsim/devices/netdevsim4242/net/ >/dev/null 2>&1 && break; sleep 0.05; done
nic=$(ls /sys/bus/netdevsim/devices/netdevsim4242/net/)
ifindex=$(cat "/sys/class/net/$nic/ifindex")
ip link set "$nic" up
echo "NIC $nic, ifindex $ifindex"

step "Its queues, as the netdev netlink family reports them (queue-get dump)"
ynl --family netdev --dump queue-get --json "{\"ifindex\": $ifindex}" --output-json

step "A pod: its own network namespace"
ip netns add demo-pod
ip -n demo-pod link set lo up

data=$(mktemp -d)
conf=$(cat <<JSON
{"cniVersion": "1.1.0", "name": "demo", "type": "netkit-cni", "mode": "l3",
 "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": "$data"}}
JSON
)
cni() { CNI_COMMAND=$1 CNI_CONTAINERID=demo-container CNI_NETNS=/run/netns/demo-pod CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni "$plugin" <<<"$2"; }
echo "$conf"

step "CNI ADD, as a runtime calls it (result on stdout)"
result=$(cni ADD "$conf")
echo "$result"
pod_ip=$(sed -E 's/.*"address":"([0-9.]+)\/.*/\1/' <<<"$result")

step "What ADD made: a netkit pair, primary on the host, peer (eth0) created inside the pod"
ip -d link show | grep -A2 -E "^[0-9]+: nk" | grep -E "nk|netkit|alias"
ip -n demo-pod -d addr show dev eth0 | grep -E "eth0|netkit|inet "
ip -n demo-pod route

step "Host -> pod over netkit"
ping -c 2 -W 2 "$pod_ip"

step "CNI CHECK against the ADD result"
cni CHECK "$(sed 's/}$//' <<<"$conf"), \"prevResult\": $result}" && echo "CHECK ok"

step "CNI DEL, then what is left (nothing)"
cni DEL "$conf" && echo "DEL ok"
echo "netkit devices: $(ip -d link show | grep -c netkit || true)"
echo "host-local reservations: $(find "$data" -name '10.*' | wc -l)"

step "Clean up"
ip netns del demo-pod
echo 4242 >/sys/bus/netdevsim/del_device
echo "done"
