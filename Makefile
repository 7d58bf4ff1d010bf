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

# Every test, in phases (set-up, kernel, unit, no-netkit, vm-run, vm), then a summary of each
# suite's counts and each phase's wall time (scripts/test). The host runs only unprivileged tests
# and the one test that needs a kernel without netkit; everything privileged runs in the VM, whose
# kernel is the project's own.
test:
	scripts/test

# `tools`: nkc-xsk (the AF_XDP tool the demo and the bench use) and its CLI tests.
unit-test:
	$(CARGO) test --release --features tools,bench

# The XDP dispatcher's BPF tests (tests/host_xdp.rs): in the VM by default, because a host kernel
# may refuse what they do (BPF_F_TEST_XDP_LIVE_FRAMES); NKC_TESTS_ON_HOST=1 runs them on a capable
# host, as root. The no-netkit test needs a host kernel without netkit (scripts/test).
host-test:
	NKC_TEST_BINS=host_xdp scripts/vm-tests

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
# Two full runs under QEMU's instruction clock (icount), each ratio's spread between them;
# NKC_BENCH_CLOCK=wall measures wall time under plain TCG instead.
bench: setup
	scripts/bench --repeat 2

clean:
	$(CARGO) clean
