# netkit-cni: the two entry points are `make demo` (the main job, in the VM on netdevsim) and
# `make test` (every test). Both install what they need on a fresh machine.
.PHONY: all build test unit-test vm-test demo setup kernel clean

CARGO ?= cargo

all: build

build:
	$(CARGO) build --release

# Everything the tests need: Debian packages, virtme-ng, the 7.x kernel (built once, cached).
setup:
	scripts/setup

kernel:
	scripts/kernel-build

# Unprivileged unit and host tests, then every privileged test inside the VM.
test: setup unit-test vm-test

unit-test:
	$(CARGO) test --release

vm-test:
	scripts/vm-tests

demo: setup
	scripts/demo

clean:
	$(CARGO) clean
