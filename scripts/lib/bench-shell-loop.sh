#!/bin/bash
# The benchmark's independent check of its own ADD/DEL timing (nkc-bench section 1c): a plain
# shell loop, no Rust, no wait4, that runs ADD then DEL of netkit-cni and of ptp, interleaved, and
# prints each plugin's total time. nkc-bench starts it inside the node netns, so each plugin is
# exec'd straight from this shell; the pod netns are made outside the timed window. Timed with
# bash's $EPOCHREALTIME (the guest's clock, read with neither an exec of `date` nor a subshell,
# whose cost would otherwise sit inside every window).
#
# Usage: bench-shell-loop.sh CNI_PATH N OURS_CONF PTP_CONF
# Prints per call "call <plugin> <ADD|DEL> <wall us>" and "cpu <plugin> <ADD|DEL> <children's user
# and system time before, then after>" (bash `times` format, e.g. 0m0.012s), then the wall totals,
# "netkit-cni <us>" and "ptp <us>".
set -euo pipefail
cni_path=$1 n=$2 ours_conf=$3 ptp_conf=$4
declare -A total=([netkit-cni]=0 [ptp]=0)
declare -A conf=([netkit-cni]=$ours_conf [ptp]=$ptp_conf)
tf=$(mktemp -p /run)
trap 'rm -f "$tf"' EXIT
for i in $(seq 1 "$n"); do
    # Alternate which plugin goes first, as section 1 does.
    if [ $((i % 2)) = 0 ]; then order="netkit-cni ptp"; else order="ptp netkit-cni"; fi
    for p in $order; do
        ns="nkcsh$i${p:0:2}"
        ip netns add "$ns"
        for cmd in ADD DEL; do
            # The CPU time of this shell's waited-for children (the plugin and its IPAM) before
            # and after: bash's `times` builtin (getrusage RUSAGE_CHILDREN), run in this shell
            # with a redirection, not in a pipeline's subshell, whose children counters are its own.
            times >"$tf"
            { read -r _; read -r cu0 cs0; } <"$tf"
            t0=${EPOCHREALTIME/./}
            CNI_COMMAND=$cmd CNI_CONTAINERID="sh-$p-$i" CNI_NETNS="/run/netns/$ns" CNI_IFNAME=eth0 \
                CNI_PATH=$cni_path "$cni_path/$p" <"${conf[$p]}" >/dev/null
            t1=${EPOCHREALTIME/./}
            times >"$tf"
            { read -r _; read -r cu1 cs1; } <"$tf"
            total[$p]=$((total[$p] + 10#$t1 - 10#$t0))
            echo "call $p $cmd $((10#$t1 - 10#$t0))"
            echo "cpu $p $cmd $cu0 $cs0 $cu1 $cs1"
        done
        ip netns del "$ns"
    done
done
echo "netkit-cni ${total[netkit-cni]}"
echo "ptp ${total[ptp]}"
