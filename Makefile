# netkit-cni: the two entry points are `make demo` (the main job, in the VM on netdevsim) and
# `make test` (every test). Both install what they need on a fresh machine.
.PHONY: all build test unit-test host-test vm-test demo bench soak setup kernel image clean

CARGO ?= cargo

all: build

build:
	$(CARGO) build --release

# Everything the tests need: Debian packages, virtme-ng, the 7.x kernel (built once, cached).
setup:
	scripts/setup

kernel:
	scripts/kernel-build

# The installer image conf/daemonset.yaml runs (podman, offline: FROM scratch with the plugin and
# Debian's busybox and curl), tagged as the manifest names it; also saved to target/image/ for
# the VM test. Prints the image id and size.
image:
	scripts/image

# Unit tests, the privileged host tests (BPF on this kernel, run as root), then every test that
# needs Linux 7.x inside the VM.
test: setup unit-test host-test vm-test

# `tools`: nkc-xsk (the AF_XDP tool the demo and the bench use) and its CLI tests.
unit-test:
	$(CARGO) test --release --features tools

host-test:
	$(CARGO) test --release --features host-tests --test host_xdp --test host_no_netkit

vm-test:
	scripts/vm-tests

demo: setup
	scripts/demo

# The full concurrency soak (make test runs a short one): 32 parallel ADD/CHECK/DEL loops x 20
# rounds on one NIC with leases and XDP, then zero leaks. NKC_SOAK_SEED=<n> replays an order.
# --nocapture: the soak's own summary (seed, rounds, time, errors, leaks) is printed when it passes.
soak: setup
	NKC_SOAK_LOOPS=$${NKC_SOAK_LOOPS:-32} NKC_SOAK_ROUNDS=$${NKC_SOAK_ROUNDS:-20} scripts/vm-tests soak_ --nocapture

# Speed and cost in the VM (see README, Benchmarks): ADD/DEL against Debian's ptp plugin, scale,
# lease and XDP cost, the XDP dispatcher against libxdp's, data path against veth, ADD profile.
bench: setup
	scripts/bench

clean:
	$(CARGO) clean
