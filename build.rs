//! Compiles the XDP programs in `bpf/` and generates their libbpf-rs skeletons into OUT_DIR
//! (never committed: they are derived from the C sources and the local libbpf-cargo).
//!
//! Needs clang (BPF target) and the kernel UAPI headers; no network.

use std::env;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// Every BPF program: `bpf/<name>.bpf.c` becomes `$OUT_DIR/<name>.skel.rs`.
const PROGRAMS: &[&str] = &["dispatcher", "host_ingress", "host_egress"];
/// Objects compiled without a skeleton: `bpf/<name>.bpf.c` becomes `$OUT_DIR/<name>.bpf.o`.
/// `bench_pass` is the program nkc-bench hands to xdp-loader (libxdp's dispatcher cost).
const OBJECTS: &[&str] = &["bench_pass"];
/// Headers the programs include; a change to any of them rebuilds every program.
const HEADERS: &[&str] = &["bpf/dispatch.h", "bpf/host_routing.h"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));

    // `-target bpf` drops the host's multiarch include directory, where Debian keeps <asm/types.h>
    // (pulled in by <linux/types.h>); add it back for the architecture we build for.
    let mut clang_args: Vec<String> =
        vec!["-Wall".into(), "-Werror".into(), "-O2".into(), "-g".into()];
    if let Some(dir) = multiarch_include() {
        clang_args.push("-I".into());
        clang_args.push(dir.display().to_string());
    }
    clang_args.push("-I".into());
    clang_args.push(manifest.join("bpf").display().to_string());

    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    for name in PROGRAMS {
        let src = manifest.join("bpf").join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed=bpf/{name}.bpf.c");
        let skel = out.join(format!("{name}.skel.rs"));
        if let Err(e) = SkeletonBuilder::new()
            .source(&src)
            .clang_args(&clang_args)
            .build_and_generate(&skel)
        {
            // The chain carries clang's diagnostics; Display alone would drop them.
            panic!("building BPF skeleton for {}: {e:?}", src.display());
        }
    }
    for name in OBJECTS {
        let src = manifest.join("bpf").join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed=bpf/{name}.bpf.c");
        if let Err(e) = SkeletonBuilder::new()
            .source(&src)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang_args(&clang_args)
            .build()
        {
            panic!("building BPF object for {}: {e:?}", src.display());
        }
    }
}

fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triplet = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "loongarch64" => "loongarch64-linux-gnu",
        _ => return None,
    };
    let dir = Path::new("/usr/include").join(triplet);
    dir.is_dir().then_some(dir)
}
