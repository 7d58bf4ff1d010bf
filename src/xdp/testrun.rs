//! `BPF_PROG_TEST_RUN` for XDP programs: single verdicts and per-packet cost.
//!
//! The kernel only accepts an `rx_queue_index` below the real RX queue count of the
//! `ingress_ifindex` device, looked up in the *calling thread's* netns: run these on a thread in
//! the device's netns.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use libbpf_rs::libbpf_sys as sys_;

use super::error::XdpError;
use crate::bpf::sys;

/// XDP verdicts (`enum xdp_action`).
pub mod verdict {
    /// Error path verdict.
    pub const XDP_ABORTED: u32 = 0;
    /// Drop.
    pub const XDP_DROP: u32 = 1;
    /// Host stack.
    pub const XDP_PASS: u32 = 2;
    /// Bounce out of the receiving device.
    pub const XDP_TX: u32 = 3;
    /// `bpf_redirect*()` found a target.
    pub const XDP_REDIRECT: u32 = 4;
}

/// A frame and where it pretends to arrive.
#[derive(Debug, Clone)]
pub struct XdpInput {
    /// Device the frame arrives on (0: none, then `rx_queue_index` must be 0).
    pub ingress_ifindex: u32,
    /// RX queue it arrives on.
    pub rx_queue_index: u32,
    /// Frame bytes (at least an Ethernet header, 14 bytes).
    pub data: Vec<u8>,
}

impl XdpInput {
    /// A 64-byte frame (broadcast Ethernet, IPv4 ethertype, zero payload) on `ifindex`/`queue`.
    pub fn on_queue(ifindex: u32, queue: u32) -> XdpInput {
        let mut data = vec![0u8; 64];
        data[..6].fill(0xff);
        data[12] = 0x08;
        XdpInput {
            ingress_ifindex: ifindex,
            rx_queue_index: queue,
            data,
        }
    }
}

/// One `BPF_PROG_TEST_RUN` result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestRun {
    /// The program's verdict (of the last repetition).
    pub retval: u32,
    /// The kernel's average run time, integer nanoseconds (truncated).
    pub kernel_avg_ns: u32,
    /// Wall-clock time of the whole syscall divided by the repetitions: fractional, and with a
    /// large `repeat` the syscall's fixed cost vanishes in it.
    pub wall_ns_per_run: f64,
}

/// Run `prog` over `input` `repeat` times (at least once) with `BPF_PROG_TEST_RUN`.
pub fn test_run_xdp(
    prog: BorrowedFd<'_>,
    input: &XdpInput,
    repeat: u32,
) -> Result<TestRun, XdpError> {
    run(prog, input, repeat, 0)
}

/// Like [`test_run_xdp`] with `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel acts on each verdict as
/// a driver would (`XDP_REDIRECT` really redirects, `XDP_PASS` builds an skb), so a frame
/// redirected to an AF_XDP socket lands in its RX ring. Frames then arrive on a stand-in RX
/// queue *0* of `ingress_ifindex`, whatever `rx_queue_index` says, and `retval` carries no
/// verdict.
pub fn test_run_xdp_live(
    prog: BorrowedFd<'_>,
    input: &XdpInput,
    repeat: u32,
) -> Result<TestRun, XdpError> {
    run(prog, input, repeat, sys_::BPF_F_TEST_XDP_LIVE_FRAMES)
}

fn run(
    prog: BorrowedFd<'_>,
    input: &XdpInput,
    repeat: u32,
    flags: u32,
) -> Result<TestRun, XdpError> {
    let mut ctx = sys_::xdp_md {
        data: 0,
        data_end: input.data.len() as u32,
        data_meta: 0,
        ingress_ifindex: input.ingress_ifindex,
        rx_queue_index: input.rx_queue_index,
        egress_ifindex: 0,
    };
    // SAFETY: zero is valid for the options struct.
    let mut opts: sys_::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<sys_::bpf_test_run_opts>() as _;
    opts.data_in = input.data.as_ptr().cast();
    opts.data_size_in = input.data.len() as u32;
    opts.ctx_in = (&mut ctx as *mut sys_::xdp_md).cast();
    opts.ctx_size_in = std::mem::size_of::<sys_::xdp_md>() as u32;
    opts.repeat = repeat.max(1) as i32;
    opts.flags = flags;
    let start = Instant::now();
    // SAFETY: buffers outlive the call; no output buffers are requested.
    let ret = unsafe { sys_::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    let wall = start.elapsed();
    if ret < 0 {
        return Err(XdpError::sys(
            "BPF_PROG_TEST_RUN",
            None,
            nix::errno::Errno::from_raw(-ret),
        ));
    }
    Ok(TestRun {
        retval: opts.retval,
        kernel_avg_ns: opts.duration,
        wall_ns_per_run: wall.as_nanos() as f64 / f64::from(repeat.max(1)),
    })
}

/// Attach `prog` to `ifindex` (calling thread's netns) through an XDP link; dropping the returned
/// link fd detaches it.
///
/// Measurements need this for *both* programs compared: the kernel turns the call of an XDP
/// program attached to a device into a direct call (its XDP `bpf_dispatcher`), while a program
/// attached nowhere is called indirectly, which with retpolines costs several ns more and would
/// make an unattached baseline look slower than the program under test.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd, XdpError> {
    sys::xdp_link_create(prog, ifindex, 0)
        .map_err(|e| XdpError::sys("BPF_LINK_CREATE (XDP)", None, e))
}

/// Per-packet cost of `prog` on `input`, in nanoseconds: the best of `rounds` test runs of
/// `repeat` packets each (the minimum filters out preemption on a busy machine), measured as
/// wall time per packet (fractional; the kernel's own figure is truncated to whole ns).
/// Compare against [`verdict_program`] returning `XDP_PASS` to get the cost a program adds (see
/// [`compare_ns_per_packet`], and [`attach_xdp`] for why both must be attached somewhere).
pub fn ns_per_packet(
    prog: BorrowedFd<'_>,
    input: &XdpInput,
    repeat: u32,
    rounds: u32,
) -> Result<f64, XdpError> {
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        best = best.min(test_run_xdp(prog, input, repeat)?.wall_ns_per_run);
    }
    Ok(best)
}

/// Per-packet costs of a program and of a baseline on the same input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// ns/packet of the program under test.
    pub prog_ns: f64,
    /// ns/packet of the baseline (e.g. a bare `XDP_PASS`).
    pub baseline_ns: f64,
}

impl Cost {
    /// What the program adds over the baseline.
    pub fn added_ns(&self) -> f64 {
        self.prog_ns - self.baseline_ns
    }
}

/// [`ns_per_packet`] of `prog` and `baseline` in alternating rounds, so that load from other
/// processes and frequency changes hit both alike; each figure is its best round.
pub fn compare_ns_per_packet(
    prog: BorrowedFd<'_>,
    baseline: BorrowedFd<'_>,
    input: &XdpInput,
    repeat: u32,
    rounds: u32,
) -> Result<Cost, XdpError> {
    let mut cost = Cost {
        prog_ns: f64::INFINITY,
        baseline_ns: f64::INFINITY,
    };
    for _ in 0..rounds.max(1) {
        cost.baseline_ns = cost
            .baseline_ns
            .min(ns_per_packet(baseline, input, repeat, 1)?);
        cost.prog_ns = cost.prog_ns.min(ns_per_packet(prog, input, repeat, 1)?);
    }
    Ok(cost)
}

/// Load a two-instruction XDP program that returns `verdict`: the bare baseline for cost
/// measurements, and a stand-in admin program. `frags` sets `BPF_F_XDP_HAS_FRAGS`.
pub fn verdict_program(verdict: u32, frags: bool) -> Result<OwnedFd, XdpError> {
    // r0 = verdict; exit
    let mov = insn(
        sys_::BPF_ALU64 | sys_::BPF_MOV | sys_::BPF_K,
        0,
        0,
        0,
        verdict as i32,
    );
    let exit = insn(sys_::BPF_JMP | sys_::BPF_EXIT, 0, 0, 0, 0);
    let flags = if frags { sys_::BPF_F_XDP_HAS_FRAGS } else { 0 };
    sys::prog_load(
        sys_::BPF_PROG_TYPE_XDP,
        sys_::BPF_XDP,
        "nkc_verdict",
        &[mov, exit],
        flags,
    )
    .map_err(|e| XdpError::sys("BPF_PROG_LOAD", None, e))
}

fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> sys_::bpf_insn {
    sys_::bpf_insn {
        code: code as u8,
        _bitfield_align_1: [],
        _bitfield_1: sys_::bpf_insn::new_bitfield_1(dst, src),
        off,
        imm,
    }
}

/// Load the canonical AF_XDP program, `return bpf_redirect_map(&xskmap, ctx->rx_queue_index,
/// fallback)`: what a NIC dedicated to one AF_XDP user would run, i.e. the baseline for the cost
/// the dispatcher adds on its *pod* path (whose redirect itself is not overhead).
pub fn xsk_redirect_program(xskmap: BorrowedFd<'_>, fallback: u32) -> Result<OwnedFd, XdpError> {
    const RX_QUEUE_INDEX: i16 = 16; // offsetof(struct xdp_md, rx_queue_index)
    let insns = [
        // r2 = ctx->rx_queue_index
        insn(
            sys_::BPF_LDX | sys_::BPF_MEM | sys_::BPF_W,
            2,
            1,
            RX_QUEUE_INDEX,
            0,
        ),
        // r1 = &xskmap (two-slot ld_imm64 with a map fd)
        insn(
            sys_::BPF_LD | sys_::BPF_DW | sys_::BPF_IMM,
            1,
            sys_::BPF_PSEUDO_MAP_FD as u8,
            0,
            xskmap.as_raw_fd(),
        ),
        insn(0, 0, 0, 0, 0),
        // r3 = fallback verdict
        insn(
            sys_::BPF_ALU64 | sys_::BPF_MOV | sys_::BPF_K,
            3,
            0,
            0,
            fallback as i32,
        ),
        insn(
            sys_::BPF_JMP | sys_::BPF_CALL,
            0,
            0,
            0,
            sys_::BPF_FUNC_redirect_map as i32,
        ),
        insn(sys_::BPF_JMP | sys_::BPF_EXIT, 0, 0, 0, 0),
    ];
    sys::prog_load(
        sys_::BPF_PROG_TYPE_XDP,
        sys_::BPF_XDP,
        "nkc_xsk_redir",
        &insns,
        0,
    )
    .map_err(|e| XdpError::sys("BPF_PROG_LOAD", None, e))
}

/// The JIT's machine code of `prog` (empty when it is not JIT'd), for reading where each
/// per-packet instruction goes (`make bench` section 4 disassembles it).
pub fn jited_image(prog: BorrowedFd<'_>) -> Result<Vec<u8>, XdpError> {
    sys::prog_jited_image(prog)
        .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD (jited)", None, e))
}
