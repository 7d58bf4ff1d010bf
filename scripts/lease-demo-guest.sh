#!/usr/bin/env bash
# Runs inside the VM: one pod gets 2 RX queues of a NIC leased into its netkit device through the
# plugin binary (ADD), the kernel's own ynl CLI shows the leases on the NIC and Debian's ethtool the
# steering (the pool out of the default RSS context, an ntuple rule sending the pod's address to an
# RSS context over its two queues), DEL gives them back and removes the rule. Usage (from the repo, after `cargo build --release`):
#   scripts/vm-run --timeout 600 -- bash scripts/lease-demo-guest.sh
set -euo pipefail
step() { printf '\n==> %s\n' "$*"; }
root=$(cd "$(dirname "$0")/.." && pwd)
plugin="$root/target/release/netkit-cni"
tag=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
node="node$tag" pod="pod$tag" nic="nic$tag" id=$((4000 + 0x${tag:0:2}))
work=$(mktemp -d /tmp/nkc-lease-demo.XXXXXX)
cleanup() {
    ip netns del "$pod" 2>/dev/null || true
    echo "$id" >/sys/bus/netdevsim/del_device 2>/dev/null || true
    ip netns del "$node" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

in_node() { ip netns exec "$node" "$@"; }
# RX queues of ifindex $2 in netns $1, one JSON object per line, straight from the kernel's ynl
# CLI (netdev queue-get dump); then how many carry a lease.
rx_queues() {
    ip netns exec "$1" /usr/bin/python3 "$NKC_KERNEL_SRC/tools/net/ynl/pyynl/cli.py" --no-schema \
        --family netdev --dump queue-get --json "{\"ifindex\": $2}" --output-json |
        python3 -c 'import json, sys
qs = [q for q in json.load(sys.stdin) if q["type"] == "rx"]
for q in qs:
    print(json.dumps(q, sort_keys=True))
print("rx queues: %d, leased: %d" % (len(qs), sum(1 for q in qs if "lease" in q)))'
}

step "Kernel"
uname -r

step "Node netns $node with a netdevsim NIC (8 queues) named $nic; pod netns $pod"
ip netns add "$node"
ip netns add "$pod"
echo "$id 1 8" >/sys/bus/netdevsim/new_device
for _ in $(seq 200); do ls "/sys/bus/netdevsim/devices/netdevsim$id/net/" >/dev/null 2>&1 && break; sleep 0.05; done
orig=$(ls "/sys/bus/netdevsim/devices/netdevsim$id/net/")
ip link set "$orig" name "$nic" netns "$node"
ip -n "$node" link set "$nic" up
ifindex=$(ip -n "$node" -j link show dev "$nic" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')
echo "NIC $nic has ifindex $ifindex in $node"

cat >"$work/conf.json" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "leasenet",
  "type": "netkit-cni",
  "pairing": "pair",
  "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": "$work/ipam"},
  "lease": {"master": "$nic", "queues": 2, "allowedQueues": "1-7", "deviceInfoDir": "$work/devinfo",
            "steering": {"rss": "exclude-pool", "match": "ip"}}
}
EOF
step "Network config"
cat "$work/conf.json"

cni() {
    in_node env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$1" CNI_CONTAINERID=demo1 \
        CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$plugin" <"$work/conf.json"
}

step "NIC RX queues before ADD (ynl queue-get dump in $node)"
rx_queues "$node" "$ifindex"

step "ADD (plugin run in $node, as a runtime would)"
cni ADD | python3 -m json.tool

step "Device-info file written by ADD"
cat "$work/devinfo/"*

step "NIC RX queues after ADD: two carry a lease (ifindex/queue of the pod device, netns-id of $pod)"
rx_queues "$node" "$ifindex"
echo "nsid of $pod as $node sees it:"
ip -n "$node" netns list-id | grep -w "$pod" || true
echo "pod eth0 ifindex: $(ip -n "$pod" -j link show dev eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')"

step "Steering (ethtool in $node): the pod's address -> an RSS context over its two queues; the default context keeps off the pool"
in_node ethtool -n "$nic"
ctx=$(in_node ethtool -n "$nic" | awk '/RSS Context ID:/ {print $4; exit}')
[ -n "$ctx" ] || { echo "no rule with an RSS context" >&2; exit 1; }
in_node ethtool -x "$nic" context "$ctx" | sed -n '1,/^RSS hash key/p' | sed '$d'
in_node ethtool -x "$nic" | sed -n '1,/^RSS hash key/p' | sed '$d'

step "The pod device's own RX queues (ynl in $pod): 0 plus the two leased ones (the lease nest is reported on the NIC's side only)"
pod_if=$(ip -n "$pod" -j link show dev eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')
rx_queues "$pod" "$pod_if"

step "DEL"
cni DEL && echo "DEL ok (exit 0)"

step "NIC RX queues after DEL: no lease left"
rx_queues "$node" "$ifindex"
echo "device-info files left: $(ls -A "$work/devinfo" | wc -l)"
echo "ntuple rules left on $nic: $(in_node ethtool -n "$nic" | grep -c '^Filter:' || true)"
echo "netkit devices left in $pod: $(ip -n "$pod" -d -j link show | python3 -c 'import json,sys; print(sum(1 for l in json.load(sys.stdin) if l.get("linkinfo",{}).get("info_kind")=="netkit"))')"
