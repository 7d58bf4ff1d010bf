# netkit-cni: the two entry points are `make demo` (the main job, in the VM on netdevsim) and
# `make test` (every test). Both install what they need on a fresh machine.
.PHONY: all build test unit-test host-test vm-test demo bench setup kernel clean

CARGO ?= cargo

all: build

build:
	$(CARGO) build --release

# Everything the tests need: Debian packages, virtme-ng, the 7.x kernel (built once, cached).
setup:
	scripts/setup

kernel:
	scripts/kernel-build

# Unit tests, the privileged host tests (BPF on this kernel, run as root), then every test that
# needs Linux 7.x inside the VM.
test: setup unit-test host-test vm-test

unit-test:
	$(CARGO) test --release

host-test:
	$(CARGO) test --release --features host-tests --test host_xdp --test host_no_netkit

vm-test:
	scripts/vm-tests

demo: setup
	scripts/demo

# Speed, as ratios against Debian's reference ptp plugin in the same VM run (see README).
bench: setup
	scripts/bench

clean:
	$(CARGO) clean
