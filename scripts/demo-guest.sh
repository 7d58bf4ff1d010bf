#!/usr/bin/env bash
# The demo, run inside the VM by scripts/demo (`make demo`): two containers started by a real
# runtime (a private containerd, `ctr run --cni`) each lease one RX queue of a NIC through
# netkit-cni, and frames sent over the wire arrive on each container's AF_XDP socket through its
# leased queue, because the plugin steers them there: it keeps the pool out of nic0's default RSS
# context and adds an ntuple rule per container (its address -> its queue). The far side picks
# no queue. Every step says what it shows before it runs; any failure stops the demo with a
# non-zero exit. Needs: target/release/netkit-cni and nkc-xsk (`cargo build --release --features
# tools`), containerd, runc, busybox-static, bpftool, containernetworking-plugins (host-local).
set -Eeuo pipefail
trap 'printf "\nFAILED: line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
root=$(cd "$(dirname "$0")/.." && pwd)
plugin="$root/target/release/netkit-cni"
xsk="$root/target/release/nkc-xsk"
export PATH="$root/target/release:$PATH"

n=0
step() {
    n=$((n + 1))
    printf '\n==> %s. %s\n' "$n" "$1"
    shift
    local line
    for line in "$@"; do printf '    %s\n' "$line"; done
}
# Print a command the way a reader would type it, then run it.
run() {
    local shown="$*"
    shown=${shown/#in_node /nsenter --net=\/run\/netns\/node }
    printf '$ %s\n' "$shown"
    "$@"
}
fail() {
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
}
ok() { printf 'ok: %s\n' "$*"; }
in_node() { nsenter --net=/run/netns/node "$@"; }
in_far() { nsenter --net=/run/netns/far "$@"; }

for f in "$plugin" "$xsk"; do
    [ -x "$f" ] || fail "$f is missing: build with 'cargo build --release --features tools'"
done

# Everything this demo makes, so that a failure half-way still leaves the VM clean. The success
# path tears it all down itself (the last step) and checks that nothing is left.
scratch="" bpffs="" containerd_pid="" pids=()
declare -A ctr_run_pid=()
teardown() {
    local rc=$?
    trap - EXIT
    if [ "$rc" != 0 ]; then
        echo "(cleaning up after the failure)" >&2
        if [ -n "$containerd_pid" ]; then
            # Killing the tasks lets each ctr run call DEL; give them time to finish it.
            for id in c1 c2; do ctr task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
            for _ in $(seq 60); do
                alive=0
                for p in "${ctr_run_pid[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
                [ "$alive" = 0 ] && break
                sleep 0.5
            done
        fi
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        [ -z "$containerd_pid" ] || { kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null; } || true
        if [ -n "$scratch" ]; then
            for f in "$scratch"/ctr-*.out "$scratch"/rx-*.err "$scratch/netkit-cni.log"; do
                [ -s "$f" ] && { echo "--- $f (tail)" >&2; tail -n 20 "$f" >&2; }
            done
        fi
    fi
    [ -z "$bpffs" ] || { umount -l "$bpffs" 2>/dev/null; rmdir "$bpffs" 2>/dev/null; } || true
    [ -z "$scratch" ] || { umount -l "$scratch" 2>/dev/null; rmdir "$scratch" 2>/dev/null; } || true
    for id in 4242 4243; do echo "$id" >/sys/bus/netdevsim/del_device 2>/dev/null || true; done
    ip netns del node 2>/dev/null || true
    ip netns del far 2>/dev/null || true
    exit "$rc"
}
trap teardown EXIT

# A new netdevsim device with $2 queues, moved into netns $3 as $4 and brought up.
new_nic() {
    local id=$1 queues=$2 ns=$3 name=$4 dir orig
    echo "$id 1 $queues" >/sys/bus/netdevsim/new_device
    dir=/sys/bus/netdevsim/devices/netdevsim$id/net
    for _ in $(seq 200); do
        # udev may rename the netdev under us: retry the move until it finds the current name.
        orig=$(ls "$dir" 2>/dev/null | head -1)
        [ -n "$orig" ] && ip link set dev "$orig" name "$name" netns "$ns" 2>/dev/null && break
        sleep 0.05
    done
    ip -n "$ns" link show dev "$name" >/dev/null 2>&1 || fail "netdevsim$id never became $name in $ns"
    ip -n "$ns" link set dev "$name" up
}

# The node NIC's RX queues from the kernel's own netdev netlink family (ynl queue-get dump), one
# JSON object per line (Debian's python3: the ynl CLI needs python3-yaml); with "leased", only
# the ones carrying a lease; with "count", how many do.
rx_queues() {
    in_node /usr/bin/python3 "$NKC_KERNEL_SRC/tools/net/ynl/pyynl/cli.py" --no-schema --family netdev --dump queue-get \
        --json "{\"ifindex\": $nic_ifindex}" --output-json |
        python3 -c 'import json, sys
qs = [q for q in json.load(sys.stdin) if q["type"] == "rx"]
what = sys.argv[1]
if what == "count":
    print(sum(1 for q in qs if "lease" in q))
for q in qs:
    if what == "all" or (what == "leased" and "lease" in q):
        print(json.dumps(q))' "$1"
}

# ------------------------------------------------------------------------------------------------
step "The kernel" \
    "Queue leasing (netdev queue-create with a lease) needs Linux >= 7.1; the VM boots the project's 7.x kernel."
run uname -r

step "A NIC in a \"node\" netns, wired to a second NIC in a \"far\" netns" \
    "netdevsim stands in for a physical multi-queue NIC (mlx5, ice, ...). The node NIC nic0 (6 queues) is the" \
    "one pods lease queues from; far0 on the other end of the simulated wire sends the traffic."
ip netns add node
ip netns add far
# No IPv6 on the far side: its router solicitations and MLD reports would otherwise cross the wire
# and could land on a leased queue, i.e. in a container's AF_XDP socket.
in_far sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
new_nic 4242 6 node nic0
new_nic 4243 6 far far0
nic_ifindex=$(ip -n node -j link show dev nic0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["ifindex"])')
far_ifindex=$(ip -n far -j link show dev far0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["ifindex"])')
# netdevsim's wire: "fd:ifindex fd:ifindex", the fds being netns handles of the writing process.
exec {node_fd}</run/netns/node {far_fd}</run/netns/far
echo "$node_fd:$nic_ifindex $far_fd:$far_ifindex" >/sys/bus/netdevsim/link_device
exec {node_fd}<&- {far_fd}<&-
ip -n node addr add 10.77.0.1/24 dev nic0
ip -n far addr add 10.77.0.2/24 dev far0
nic_mac=$(ip -n node -j link show dev nic0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["address"])')
# A static neighbour entry: the far side never needs ARP to send to the node.
ip -n far neigh replace 10.77.0.1 lladdr "$nic_mac" dev far0 nud permanent
echo "node: nic0 (ifindex $nic_ifindex, $nic_mac) 10.77.0.1/24  <== wire ==>  far: far0 10.77.0.2/24"
echo "nic0's RX queues as the kernel reports them (ynl --family netdev --dump queue-get):"
rx_queues all

# ------------------------------------------------------------------------------------------------
step "A private containerd and an offline busybox image" \
    "containerd with its own config, root, state and socket on a tmpfs (the CRI plugin off: ctr drives it)," \
    "and an OCI image archive packed here from Debian's static busybox and imported: no registry involved." \
    "(ctr below stands for: ctr --address <that socket> --namespace demo)"
scratch=$(mktemp -d /tmp/nkc-demo.XXXXXX)
# A tmpfs: the VM's /tmp is 9p, which containerd's overlayfs snapshotter cannot use.
mount -t tmpfs -o mode=0755 tmpfs "$scratch"
mkdir -p "$scratch"/{root,state,opt,fifo,image,cni-conf,cni-bin,ipam,devinfo}
sock="$scratch/containerd.sock"
cat >"$scratch/containerd.toml" <<EOF
version = 2
root = "$scratch/root"
state = "$scratch/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$scratch/opt"
EOF
containerd --config "$scratch/containerd.toml" >"$scratch/containerd.log" 2>&1 &
containerd_pid=$!
ctr() { command ctr --address "$sock" --namespace demo "$@"; }
for i in $(seq 240); do
    ctr version >/dev/null 2>&1 && break
    kill -0 "$containerd_pid" 2>/dev/null || { tail -n 20 "$scratch/containerd.log" >&2; fail "containerd exited"; }
    [ "$i" = 240 ] && fail "containerd did not answer within 120 s"
    sleep 0.5
done
echo "containerd $(ctr version | awk '/Server:/ {s = 1} s && /Version:/ {print $2; exit}') serving on $sock"

# The image: one uncompressed layer (busybox and the applets used here), a config, a manifest and
# an index naming it, in the OCI image layout, tarred. Blobs are named by their sha256.
img="$scratch/image"
mkdir -p "$img/rootfs/bin" "$img/layout/blobs/sha256"
cp /bin/busybox "$img/rootfs/bin/busybox"
for applet in sh sleep ip cat; do ln -s busybox "$img/rootfs/bin/$applet"; done
blob() { # file -> moves it into the layout, prints "sha256:<hex> <size>"
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$img/layout/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$img/rootfs" -cf "$img/layer.tar" .
diff_id="sha256:$(sha256sum "$img/layer.tar" | cut -d' ' -f1)"
read -r layer_digest layer_size < <(blob "$img/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$diff_id" >"$img/config.json"
read -r config_digest config_size < <(blob "$img/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$img/manifest.json"
read -r manifest_digest manifest_size < <(blob "$img/manifest.json")
image=localhost/nkc-busybox:demo
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$image" >"$img/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$img/layout/oci-layout"
tar --owner=0 --group=0 -C "$img/layout" -cf "$img/busybox-oci.tar" oci-layout index.json blobs
run ctr image import "$img/busybox-oci.tar" >/dev/null
ctr image ls | awk -v img="$image" '$1 == img {print "imported:", $1, "(" $4, $5 ")"}'

# ------------------------------------------------------------------------------------------------
step "A conflist with netkit-cni, and two containers started with ctr run --cni" \
    "pairing single: one netkit device (eth0) in the container, no host side; lease: one RX queue of nic0" \
    "from the pool 1-4 per container; steering: the plugin takes the pool out of nic0's default RSS" \
    "context and adds an ntuple rule sending the container's address to its queue; xdp: the plugin's XDP" \
    "dispatcher on nic0 hands each leased queue to that container's own AF_XDP socket map (pinned in a" \
    "private bpffs); host-local addresses eth0."
bpffs=$(mktemp -d /tmp/nkc-demo-bpffs.XXXXXX)
mount -t bpf bpf "$bpffs"
cat >"$scratch/cni-conf/10-xsknet.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "xsknet",
  "plugins": [
    {
      "type": "netkit-cni",
      "pairing": "single",
      "ipam": {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": "$scratch/ipam"},
      "lease": {"master": "nic0", "allowedQueues": "1-4", "queues": 1, "deviceInfoDir": "$scratch/devinfo",
                "steering": {"rss": "exclude-pool", "match": "ip"}},
      "xdp": {"bpffs": "$bpffs"},
      "logFile": "$scratch/netkit-cni.log"
    }
  ]
}
EOF
echo "# /etc/cni/net.d/10-xsknet.conflist (a private mount of $scratch/cni-conf)"
cat "$scratch/cni-conf/10-xsknet.conflist"
ln -s "$plugin" "$scratch/cni-bin/netkit-cni"
ln -s /usr/lib/cni/host-local "$scratch/cni-bin/host-local"

# ctr has no CNI flags: it reads the first config in /etc/cni/net.d and its plugins from
# /opt/cni/bin. So it runs in a private mount namespace with our directories bind-mounted there,
# and in the node netns (where nic0 is). ctr only tears the network down from the `run`
# invocation that set it up, so `run` stays in the foreground, here as a background job.
start_container() {
    local id=$1 i
    printf '$ ctr run --cni --rm %s %s /bin/sleep 3600 &    # in netns node, with the conflist above\n' "$image" "$id"
    nsenter --net=/run/netns/node unshare --mount --propagation private sh -c '
        mount --bind "$1" /etc/cni/net.d && mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin &&
        mount --bind "$2" /opt/cni/bin && shift 2 && exec "$@"' sh "$scratch/cni-conf" "$scratch/cni-bin" \
        ctr --address "$sock" --namespace demo run --cni --rm --fifo-dir "$scratch/fifo" "$image" "$id" /bin/sleep 3600 \
        </dev/null >"$scratch/ctr-$id.out" 2>&1 &
    ctr_run_pid[$id]=$!
    pids+=("$!")
    for i in $(seq 360); do
        [ "$(task_field "$id" 3)" = RUNNING ] && return 0
        kill -0 "${ctr_run_pid[$id]}" 2>/dev/null || { cat "$scratch/ctr-$id.out" >&2; fail "ctr run $id exited before its task ran"; }
        sleep 0.5
    done
    fail "container $id did not start within 180 s"
}
task_field() { ctr task ls | awk -v id="$1" -v f="$2" '$1 == id {print $f}'; }

start_container c1
start_container c2
run ctr task ls
c1_pid=$(task_field c1 2)
c2_pid=$(task_field c2 2)
for id in c1 c2; do
    pid=$(task_field "$id" 2)
    echo "$id's network namespace (as seen by nsenter --net=/proc/$pid/ns/net):"
    nsenter --net="/proc/$pid/ns/net" ip -4 -br addr show dev eth0 | sed 's/^/    /'
done
reserved=$(find "$scratch/ipam" -type f -name '10.*' | wc -l)
[ "$reserved" = 2 ] || fail "host-local should hold 2 addresses, holds $reserved"

# ------------------------------------------------------------------------------------------------
step "What the plugin set up, as netkit-cni inspect, bpftool and the device-info file report it" \
    "inspect is read-only: it lists nic0's RX queues (who leased which), and the dispatcher with its pins." \
    "The kernel has one XDP program on nic0, attached by one bpf_link pinned in the private bpffs."
# With the network's device-info directory inspect verifies each lease's owner from the record
# the plugin wrote (without it, it can only show the alias, which the pod can rewrite).
inspected=$(run in_node netkit-cni inspect --master nic0 --bpffs "$bpffs" --device-info-dir "$scratch/devinfo")
printf '%s\n' "$inspected"
unverified=$(printf '%s\n' "$inspected" | grep -c unverified || true)
[ "$unverified" = 0 ] || fail "inspect could not verify $unverified lease owner(s) from $scratch/devinfo"
echo
echo "The same as JSON (for tools), trimmed to the dispatcher and the leased queues:"
echo "\$ nsenter --net=/run/netns/node netkit-cni inspect --json --master nic0 --bpffs $bpffs --device-info-dir $scratch/devinfo | <filter>"
in_node netkit-cni inspect --json --master nic0 --bpffs "$bpffs" --device-info-dir "$scratch/devinfo" | python3 -c 'import json, sys
nic = json.load(sys.stdin)["nics"][0]
d = dict(nic["dispatcher"], pins="[%d pins]" % len(nic["dispatcher"]["pins"]))
print("nics[0].dispatcher:", json.dumps(d))
for i, q in enumerate(nic["queues"]):
    if q["state"] != "free":
        print("nics[0].queues[%d]:" % i, json.dumps(q))'
echo
echo "The steering the plugin wrote, as Debian's ethtool reads it from nic0: one ntuple rule per container"
echo "(its address -> its leased queue), and the default RSS context spreading over the queues outside the pool:"
run in_node ethtool -n nic0
run in_node ethtool -x nic0 | sed -n '1,/^RSS hash key/p' | sed '$d'
rules=$(in_node ethtool -n nic0 | grep -c '^Filter:' || true)
[ "$rules" = 2 ] || fail "expected 2 ntuple rules on nic0, ethtool -n shows $rules"
rss_pool=$(in_node ethtool -x nic0 | awk '/^RSS hash key/ {exit} /^ *[0-9]+:/ {for (i = 2; i <= NF; i++) if ($i >= 1 && $i <= 4) n++} END {print n + 0}')
[ "$rss_pool" = 0 ] || fail "nic0's default RSS context still spreads onto the pool 1-4"
echo
echo "The same leases in the kernel's own queue dump (ynl, leased RX queues of nic0 only):"
rx_queues leased
[ "$(rx_queues count)" = 2 ] || fail "expected 2 leased RX queues on nic0, ynl shows $(rx_queues count)"
echo
echo "\$ nsenter --net=/run/netns/node bpftool net show dev nic0    # (its xdp part)"
in_node bpftool net show dev nic0 | sed -n '/^xdp:/,/^$/p'
echo "\$ nsenter --net=/run/netns/node bpftool -f link show    # (its xdp links; -f: with their pins)"
in_node bpftool -f link show | awk '/^[0-9]+: / {x = ($2 == "xdp")} x'
[ "$(bpftool -j link show | python3 -c 'import json, sys; print(sum(1 for l in json.load(sys.stdin) if l["type"] == "xdp"))')" = 1 ] ||
    fail "expected exactly one XDP link"
info1="$scratch/devinfo/xsknet:demo-c1:eth0-device.json"
info2="$scratch/devinfo/xsknet:demo-c2:eth0-device.json"
[ -f "$info1" ] && [ -f "$info2" ] || fail "device-info files missing: $(ls "$scratch/devinfo")"
echo
echo "Device-info file of c1 (what a workload in the pod reads to find its queue and socket map):"
echo "$ cat $info1"
python3 -m json.tool "$info1"

# ------------------------------------------------------------------------------------------------
step "Frames through the leased queues, into each container's AF_XDP socket" \
    "In each container, nkc-xsk binds an AF_XDP socket to eth0's virtual queue and puts it in the container's" \
    "socket map; the far side sends UDP to each container's address (routed via the node), from many source" \
    "ports, on whatever TX queue its stack picks: nic0's rule for the address puts it on the container's" \
    "queue. Each socket must get its own frames only, and the node's own UDP stack none of them."
# devinfo FILE -> "physical virtual xsk-map interface"
devinfo() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))["netkit-lease"]
print(d["queues"][0]["physical"], d["xdp"]["start-queue"], d["xdp"]["xsk-map"], d["interface"])' "$1"
}
read -r c1_phys c1_vq c1_map c1_if < <(devinfo "$info1")
read -r c2_phys c2_vq c2_map c2_if < <(devinfo "$info2")
echo "c1: physical queue $c1_phys -> $c1_if virtual queue $c1_vq; c2: physical queue $c2_phys -> $c2_if virtual queue $c2_vq"
c1_ip=$(nsenter --net="/proc/$c1_pid/ns/net" ip -4 -j addr show dev eth0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
c2_ip=$(nsenter --net="/proc/$c2_pid/ns/net" ip -4 -j addr show dev eth0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
echo "c1 has $c1_ip, c2 has $c2_ip; the far side routes their subnet via the node:"
run in_far ip route add 10.88.0.0/24 via 10.77.0.1 dev far0
for id in c1 c2; do
    ip=$([ "$id" = c1 ] && echo "$c1_ip" || echo "$c2_ip")
    q=$([ "$id" = c1 ] && echo "$c1_phys" || echo "$c2_phys")
    in_node ethtool -n nic0 | awk -v ip="$ip" '/^Filter:/ {r = $0} $0 ~ "Dest IP addr: " ip " " {f = 1} f && /Action:/ {print r " (" ip "): " $0; exit}' |
        grep -q "Direct to queue $q\$" || fail "no rule on nic0 sends $ip to queue $q: $(in_node ethtool -n nic0)"
    ok "nic0's rule sends $id's address $ip to queue $q (ethtool -n)"
done

frames=5
start_rx() { # id pid vqueue map ifname
    printf '$ nsenter --net=/proc/%s/ns/net nkc-xsk rx --ifname %s --queue %s --map %s --key %s --count %s --timeout 30 &\n' \
        "$2" "$5" "$3" "$4" "$3" "$frames"
    nsenter --net="/proc/$2/ns/net" "$xsk" rx --ifname "$5" --queue "$3" --map "$4" --key "$3" \
        --count "$frames" --timeout 30 >"$scratch/rx-$1.out" 2>"$scratch/rx-$1.err" &
    pids+=("$!")
    eval "rx_$1=$!"
    local i
    for i in $(seq 200); do
        grep -qx ready "$scratch/rx-$1.err" && return 0
        kill -0 "$!" 2>/dev/null || fail "nkc-xsk rx in $1 exited: $(cat "$scratch/rx-$1.err")"
        sleep 0.1
    done
    fail "nkc-xsk rx in $1 never became ready: $(cat "$scratch/rx-$1.err")"
}
start_rx c1 "$c1_pid" "$c1_vq" "$c1_map" "$c1_if"
start_rx c2 "$c2_pid" "$c2_vq" "$c2_map" "$c2_if"

# The node's UDP stack counts every datagram addressed to it (InDatagrams, or NoPorts when nobody
# listens): frames taken by the dispatcher into a socket never get that far.
node_udp() {
    in_node awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) k[i] = $i; h = 1 }
        else { for (i = 1; i <= NF; i++) if (k[i] == "InDatagrams" || k[i] == "NoPorts") s += $i; print s; exit } }' /proc/net/snmp
}
udp_before=$(node_udp)
echo "$ # from far: $frames datagrams to $c1_ip:5001 (c1) and $frames to $c2_ip:5002 (c2), interleaved, each from its own source port"
in_far bash -c 'for i in $(seq "$1"); do
    printf "to c1 #%d" "$i" >"/dev/udp/$2/5001"
    printf "to c2 #%d" "$i" >"/dev/udp/$3/5002"
    sleep 0.05
done' sh "$frames" "$c1_ip" "$c2_ip"
wait "$rx_c1" || fail "container 1's socket did not get $frames frames: $(grep -vx ready "$scratch/rx-c1.err")"
wait "$rx_c2" || fail "container 2's socket did not get $frames frames: $(grep -vx ready "$scratch/rx-c2.err")"
for id in c1 c2; do
    echo "received by $id's AF_XDP socket:"
    sed 's/^/    /' "$scratch/rx-$id.out"
done
for id in c1 c2; do
    other=$([ "$id" = c1 ] && echo c2 || echo c1)
    [ "$(grep -c "payload=\"to $id #" "$scratch/rx-$id.out")" = "$frames" ] || fail "$id did not receive its $frames frames"
    ! grep -q "payload=\"to $other #" "$scratch/rx-$id.out" || fail "$id received frames meant for $other"
done
udp_after=$(node_udp)
[ "$udp_after" = "$udp_before" ] || fail "the node's UDP stack saw $((udp_after - udp_before)) of the leased queues' datagrams"
ok "each socket got exactly its own $frames frames; the node's UDP stack got none (InDatagrams+NoPorts unchanged: $udp_after)"
echo "$ # from far: 8 datagrams to the node's own address 10.77.0.1:5003, from 8 source ports (RSS spreads them)"
in_far bash -c 'for i in 1 2 3 4 5 6 7 8; do printf "to the node" >/dev/udp/10.77.0.1/5003; sleep 0.05; done'
for _ in $(seq 50); do [ $(($(node_udp) - udp_after)) -ge 8 ] && break; sleep 0.1; done
[ $(($(node_udp) - udp_after)) = 8 ] || fail "the node's own datagrams must reach its stack (saw $(($(node_udp) - udp_after)) of 8)"
ok "the node's UDP stack counted those 8: RSS spreads the node's traffic over the queues outside the pool (0 and 5)"

# ------------------------------------------------------------------------------------------------
step "DPDK's testpmd receives through c1's leased queue, with the AF_XDP PMD" \
    "Debian trixie's dpdk-testpmd (DPDK 24.11, chrooted into the root filesystem scripts/dpdk-rootfs built)" \
    "runs in container 1's netns with a net_af_xdp port made from the device-info file alone: it inserts its" \
    "socket into the container's map itself (use_pinned_map), loads no XDP program, and counts c1's frames."
[ -n "${NKC_DPDK_ROOTFS:-}" ] || fail "NKC_DPDK_ROOTFS is unset: scripts/demo builds the DPDK root filesystem and sets it"
vdev="net_af_xdp0,iface=$c1_if,start_queue=$c1_vq,queue_count=1,use_pinned_map=1,dp_path=$c1_map,force_copy=1"
mkfifo "$scratch/testpmd.in"
printf '$ nsenter --net=/proc/%s/ns/net scripts/dpdk-chroot $NKC_DPDK_ROOTFS --bind %s -- \\\n    dpdk-testpmd -l 0-1 --no-huge -m 256 --no-shconf --no-pci --vdev %s -- \\\n    --total-num-mbufs=8192 --forward-mode=rxonly --auto-start &\n' "$c1_pid" "$bpffs" "$vdev"
nsenter --net="/proc/$c1_pid/ns/net" "$root/scripts/dpdk-chroot" "$NKC_DPDK_ROOTFS" --bind "$bpffs" -- \
    stdbuf -oL -eL dpdk-testpmd -l 0-1 --no-huge -m 256 --no-shconf --no-pci --no-telemetry --vdev "$vdev" -- \
    --total-num-mbufs=8192 --forward-mode=rxonly --auto-start <"$scratch/testpmd.in" >"$scratch/testpmd.out" 2>&1 &
testpmd_pid=$!
pids+=("$testpmd_pid")
exec {testpmd_in}>"$scratch/testpmd.in"
for _ in $(seq 600); do
    grep -q "Press enter to exit" "$scratch/testpmd.out" && break
    kill -0 "$testpmd_pid" 2>/dev/null || { cat "$scratch/testpmd.out" >&2; fail "testpmd exited before forwarding"; }
    sleep 0.2
done
grep -q "Press enter to exit" "$scratch/testpmd.out" || { cat "$scratch/testpmd.out" >&2; fail "testpmd did not start within 120 s"; }
grep -E "^Port 0:|rxonly packet forwarding" "$scratch/testpmd.out" | sed 's/^/    /'
echo "$ # from far: $frames datagrams to $c1_ip:5001 (c1's address: its rule, its queue)"
in_far bash -c 'for i in $(seq "$1"); do printf "to testpmd #%d" "$i" >"/dev/udp/$2/5001"; sleep 0.05; done' sh "$frames" "$c1_ip"
sleep 2
echo >&"$testpmd_in" # "Press enter to exit": testpmd stops, prints its counters and quits
exec {testpmd_in}>&-
wait "$testpmd_pid" || { cat "$scratch/testpmd.out" >&2; fail "testpmd failed"; }
echo "testpmd's forward statistics for port 0:"
sed -n '/Forward statistics for port 0/,/^  ---*$/p' "$scratch/testpmd.out" | head -4 | sed 's/^/    /'
rx=$(sed -n '/Forward statistics for port 0/,/^ *-\{20,\}/s/.*RX-packets: *\([0-9]*\).*/\1/p' "$scratch/testpmd.out" | head -1)
[ "$rx" = "$frames" ] || { cat "$scratch/testpmd.out" >&2; fail "testpmd counted ${rx:-no} frames on port 0, not $frames"; }
ok "testpmd's AF_XDP port received exactly c1's $frames frames through the lease"

# ------------------------------------------------------------------------------------------------
step "Stop both containers; nothing of the plugin's may be left" \
    "Killing a task ends its ctr run, which calls DEL for the network (lease ends, socket map and, with the" \
    "last pod, the dispatcher go; host-local releases the address) and removes the container."
for id in c1 c2; do
    run ctr task kill -s SIGKILL "$id"
    rc=0
    wait "${ctr_run_pid[$id]}" || rc=$?
    # 137: the task died of SIGKILL, as asked; anything else means ctr run failed (e.g. in DEL).
    [ "$rc" = 137 ] || { cat "$scratch/ctr-$id.out" >&2; fail "ctr run $id returned $rc, not 137"; }
    echo "ctr run $id returned (task killed by SIGKILL, container removed)"
done
[ -z "$(ctr task ls -q)" ] || fail "tasks left: $(ctr task ls -q)"
[ -z "$(ctr containers ls -q)" ] || fail "containers left: $(ctr containers ls -q)"
echo
netkit_count() {
    ip "$@" -d -j link show | python3 -c 'import json, sys
print(sum(1 for l in json.load(sys.stdin) if l.get("linkinfo", {}).get("info_kind") == "netkit"))'
}
left=$(($(netkit_count) + $(netkit_count -n node)))
[ "$left" = 0 ] || fail "$left netkit devices left"
ok "no netkit devices"
leased=$(rx_queues count)
[ "$leased" = 0 ] || fail "$leased RX queues of nic0 still leased: $(rx_queues leased)"
ok "no leases on nic0 (ynl queue-get: $(rx_queues all | wc -l) RX queues, none with a lease)"
rules=$(in_node ethtool -n nic0 | grep -c '^Filter:' || true)
[ "$rules" = 0 ] || fail "ntuple rules left on nic0: $(in_node ethtool -n nic0)"
ok "no ntuple rules on nic0 (ethtool -n)"
xdp=$(in_node bpftool -j net show dev nic0 | python3 -c 'import json, sys; print(len(json.load(sys.stdin)[0]["xdp"]))')
links=$(bpftool -j link show | python3 -c 'import json, sys; print(sum(1 for l in json.load(sys.stdin) if l["type"] == "xdp"))')
[ "$xdp" = 0 ] && [ "$links" = 0 ] || fail "XDP left on nic0: $(in_node bpftool net show dev nic0; bpftool link show)"
ok "no XDP program on nic0, no XDP link (bpftool)"
pinned=$(find "$bpffs" -mindepth 2 | wc -l)
[ "$pinned" = 0 ] || fail "pins left in the bpffs: $(find "$bpffs" -mindepth 1)"
ok "the NIC's directory under $bpffs/netkit-cni is gone, nothing pinned"
reserved=$(find "$scratch/ipam" -type f -name '10.*' | wc -l)
[ "$reserved" = 0 ] || fail "host-local still holds: $(find "$scratch/ipam" -type f -name '10.*')"
ok "no host-local reservations"
[ -z "$(ls -A "$scratch/devinfo")" ] || fail "device-info files left: $(ls -A "$scratch/devinfo")"
ok "no device-info files"
run in_node netkit-cni inspect --bpffs "$bpffs" --device-info-dir "$scratch/devinfo"

echo
echo "Stopping containerd, removing the NICs and the namespaces"
kill "$containerd_pid"
wait "$containerd_pid" || true
containerd_pid=""
umount "$bpffs" && rmdir "$bpffs" && bpffs=""
umount "$scratch" && rmdir "$scratch" && scratch=""
echo 4242 >/sys/bus/netdevsim/del_device
echo 4243 >/sys/bus/netdevsim/del_device
ip netns del node
ip netns del far
printf '\n==> demo passed\n'
