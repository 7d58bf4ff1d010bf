#!/usr/bin/env bash
# Runs inside the VM (scripts/demo starts it). Prints each step before doing it.
set -euo pipefail
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

step "Clean up"
echo 4242 >/sys/bus/netdevsim/del_device
echo "done"
