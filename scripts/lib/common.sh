# shellcheck shell=bash
# Shared helpers for the project's scripts. Sourced, never executed.
#
# Everything a script installs or builds lands in one cache directory outside the work tree, so a
# fresh clone on a machine that already ran the tests reuses it, and CI (a fresh clone) does too.

NKC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NKC_CACHE=${NETKIT_CNI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netkit-cni}
mkdir -p "$NKC_CACHE"

# The kernel we test against. Debian ships it in trixie-backports as a source package.
NKC_KERNEL_SERIES=${NKC_KERNEL_SERIES:-7.3}
# virtme-ng drives QEMU for us; pinned so a new release cannot change how the guest boots.
NKC_VIRTME_NG_VERSION=1.42
NKC_VIRTME_BIN="$NKC_CACHE/virtme-ng-$NKC_VIRTME_NG_VERSION/bin"

# One cargo feature set for every privileged test binary (scripts/test's no-netkit and vm-run
# phases, scripts/vm-tests): a different set would compile the crate and its tests once more.
NKC_PRIV_FEATURES=vm-tests,host-tests,script-tests

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The Debian mirror the machine already uses. We reuse it rather than naming any host ourselves.
debian_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot find the Debian mirror in the machine's apt sources"
    printf '%s\n' "$uri"
}

# A private apt state that adds newer suites (trixie, trixie-backports, bookworm-backports) without
# touching the system's own sources or lists. Packages installed through it are still recorded by
# the system's dpkg, as any package would be.
NKC_APT_DIR="$NKC_CACHE/apt"
nkc_apt() {
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    if [ ! -f "$NKC_APT_DIR/sources.list" ]; then
        mkdir -p "$NKC_APT_DIR/empty.d" "$NKC_APT_DIR/lists/partial" "$NKC_APT_DIR/cache/archives/partial"
        local mirror
        mirror=$(debian_mirror)
        local host_suite
        host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        {
            echo "deb [signed-by=$keyring] $mirror $host_suite main"
            echo "deb [signed-by=$keyring] $mirror $host_suite-updates main"
            echo "deb [signed-by=$keyring] $mirror $host_suite-backports main"
            echo "deb [signed-by=$keyring] $mirror trixie main"
            echo "deb [signed-by=$keyring] $mirror trixie-backports main"
        } >"$NKC_APT_DIR/sources.list.tmp"
        mv "$NKC_APT_DIR/sources.list.tmp" "$NKC_APT_DIR/sources.list"
    fi
    # Without pinning, apt would upgrade half the host to trixie; only what we name explicitly
    # (pkg/suite) comes from the newer suites.
    if [ ! -f "$NKC_APT_DIR/preferences" ]; then
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 1\n\nPackage: *\nPin: release n=trixie-backports\nPin-Priority: 1\n' \
            >"$NKC_APT_DIR/preferences"
    fi
    apt-get -o Dir::Etc::SourceList="$NKC_APT_DIR/sources.list" \
        -o Dir::Etc::SourceParts="$NKC_APT_DIR/empty.d" \
        -o Dir::Etc::Preferences="$NKC_APT_DIR/preferences" \
        -o Dir::Etc::PreferencesParts="$NKC_APT_DIR/empty.d" \
        -o Dir::State::Lists="$NKC_APT_DIR/lists" \
        -o Dir::Cache="$NKC_APT_DIR/cache" \
        -o APT::Get::List-Cleanup=0 \
        -o APT::Sandbox::User=root \
        "$@"
}

# Refresh the private lists at most once a day.
nkc_apt_update() {
    local stamp="$NKC_APT_DIR/updated"
    if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
        nkc_apt update -qq >&2 || die "apt-get update failed"
        touch "$stamp"
    fi
}

# Install Debian packages that are missing (by dpkg status), with one apt call.
# `need_debs -t SUITE pkg...` resolves dependencies against SUITE too (e.g. bookworm-backports QEMU,
# whose libraries must match the backported qemu-utils the machine image already carries).
need_debs() {
    local target=()
    if [ "${1:-}" = "-t" ]; then target=(-t "$2"); shift 2; fi
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${target[*]}: ${missing[*]}"
    nkc_apt_update
    DEBIAN_FRONTEND=noninteractive nkc_apt install -y -qq --no-install-recommends "${target[@]}" "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# Build the plugin as a static-pie executable and print its path: no dynamic loader and no
# shared objects to map and relocate at each exec (CNI_COMMAND=VERSION: 198,398 instead of
# 503,110 instructions under callgrind, docs/benchmarks.md), and nothing to resolve on the node that the
# installer copies it to. crt-static goes through RUSTFLAGS with an explicit --target so that it
# applies to the target only: without --target cargo would build proc-macros with it too, which
# rustc refuses. Dies unless `file` calls the result static-pie.
nkc_static_plugin() {
    local host bin
    host=$(rustc -vV | sed -n 's/^host: //p')
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$host" --bin netkit-cni >&2
    bin="$NKC_ROOT/target/$host/release/netkit-cni"
    file "$bin" | grep -q 'static-pie linked' || die "$bin is not static-pie: $(file -b "$bin")"
    echo "$bin"
}
