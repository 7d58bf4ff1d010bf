//! A minimal AF_XDP socket: one UMEM, its fill and completion rings, an RX and a TX ring, bound
//! to one queue of one device. It is what a pod's application would open on a leased queue, and
//! what the tests, the demo (`nkc-xsk`) and the benchmark use to see frames arrive there.
//!
//! The UMEM is split once at bind time: the first frames circulate between the fill ring and the
//! RX ring (every received frame goes straight back to the fill ring, so the socket receives
//! indefinitely), the rest are TX buffers that come back through the completion ring.
//!
//! The rings follow the protocol of libxdp's `xsk.h`: each side keeps cached copies of both
//! indexes, reads the other side's index with Acquire and publishes its own with Release, so a
//! descriptor is complete before the kernel sees the index that covers it and is not read before
//! the kernel's index covering it has been seen.
//!
//! [`frame`] builds and describes the Ethernet/IPv4/UDP frames the tools send and print.

pub mod frame;

use std::marker::PhantomData;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::bpf::sys;

/// The kernel's smallest UMEM chunk (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;
/// Headroom the kernel reserves in front of every received frame (`XDP_PACKET_HEADROOM`): the
/// largest frame a socket can receive is `frame_size` minus this.
pub const RX_HEADROOM: u32 = 256;
/// How long [`Xsk::send`] keeps kicking the kernel without any progress before it gives up.
const TX_STALL: Duration = Duration::from_secs(1);

/// Error of an AF_XDP socket operation. Kernel failures keep the errno typed and name the step
/// that failed, since the errno alone (`EINVAL`, `EBUSY`) does not say which of the dozen
/// setup calls refused.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The configuration cannot work; nothing was created.
    #[error("AF_XDP socket configuration: {field} {reason}")]
    Config {
        /// The offending [`XskConfig`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A syscall failed (socket, mmap, setsockopt, getsockopt, poll, recvfrom, sendto).
    #[error("{step}: {errno}")]
    Sys {
        /// e.g. "setsockopt XDP_UMEM_REG", "mmap RX ring".
        step: &'static str,
        /// Typed errno.
        errno: Errno,
    },
    /// bind(2) refused the device/queue.
    #[error("bind AF_XDP socket to ifindex {ifindex} queue {queue}: {errno}{}", bind_hint(*.errno))]
    Bind {
        /// Device, in the binding thread's netns.
        ifindex: u32,
        /// Queue id.
        queue: u32,
        /// Typed errno.
        errno: Errno,
    },
    /// Opening an XSKMAP pin or putting the socket into it failed.
    #[error("{step} {} key {key}: {errno}", .path.display())]
    Map {
        /// "BPF_OBJ_GET" or "BPF_MAP_UPDATE_ELEM".
        step: &'static str,
        /// The map's pin.
        path: PathBuf,
        /// The slot.
        key: u32,
        /// Typed errno.
        errno: Errno,
    },
    /// A frame given to [`Xsk::send`] does not fit a UMEM frame (or is empty).
    #[error("frame {index} is {len} bytes; frames must be 1..={max} bytes")]
    FrameLength {
        /// Position in the slice passed to `send`.
        index: usize,
        /// Its length.
        len: usize,
        /// The configured frame size.
        max: usize,
    },
    /// The kernel put a descriptor outside the UMEM on a ring: never expected, and reported
    /// instead of read.
    #[error("{ring} ring descriptor outside the UMEM: addr {addr:#x} len {len}")]
    BadDescriptor {
        /// "RX" or "completion".
        ring: &'static str,
        /// Descriptor address.
        addr: u64,
        /// Descriptor length.
        len: u32,
    },
}

impl XskError {
    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            XskError::Sys { errno, .. }
            | XskError::Bind { errno, .. }
            | XskError::Map { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    fn sys(step: &'static str, errno: Errno) -> XskError {
        XskError::Sys { step, errno }
    }

    fn last(step: &'static str) -> XskError {
        XskError::sys(step, Errno::last())
    }
}

/// The errnos bind(2) gives for the mistakes callers actually make.
fn bind_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EBUSY => " (another AF_XDP socket or UMEM already uses this queue)",
        Errno::EINVAL => " (the device has fewer queues, or the mode flags are not supported)",
        Errno::ENODEV => " (no such device in this network namespace)",
        Errno::EOPNOTSUPP => " (the driver cannot do zero-copy; use copy mode)",
        _ => "",
    }
}

/// Sizes and mode of an [`Xsk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM frames. Half of them (at most `ring_size`) receive, the rest transmit.
    pub frames: u32,
    /// Bytes per UMEM frame: a power of two from [`MIN_FRAME_SIZE`] to the page size. Received
    /// frames get at most `frame_size - RX_HEADROOM` bytes.
    pub frame_size: u32,
    /// Entries of each of the four rings (fill, completion, RX, TX): a power of two.
    pub ring_size: u32,
    /// Bind with `XDP_COPY`. Without it the kernel picks zero-copy where the driver has it.
    pub copy: bool,
    /// Bind with `XDP_USE_NEED_WAKEUP`: the kernel says through ring flags when it needs a
    /// syscall to make progress instead of being kicked every time.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    /// 2048 frames of 2048 bytes (4 MiB of UMEM, pinned by the kernel), rings of 1024, copy mode.
    fn default() -> XskConfig {
        XskConfig {
            frames: 2048,
            frame_size: 2048,
            ring_size: 1024,
            copy: true,
            need_wakeup: true,
        }
    }
}

impl XskConfig {
    /// Check what the kernel would refuse with a bare `EINVAL`, naming the field.
    pub fn validate(&self) -> Result<(), XskError> {
        self.validated_umem_len().map(drop)
    }

    fn validated_umem_len(&self) -> Result<usize, XskError> {
        let bad = |field, reason: String| Err(XskError::Config { field, reason });
        let page = page_size();
        if !self.frame_size.is_power_of_two()
            || self.frame_size < MIN_FRAME_SIZE
            || self.frame_size as usize > page
        {
            return bad(
                "frame_size",
                format!(
                    "{} must be a power of two from {MIN_FRAME_SIZE} to the page size {page}",
                    self.frame_size
                ),
            );
        }
        if self.frames < 2 {
            return bad(
                "frames",
                format!(
                    "{} must be at least 2 (one to receive, one to send)",
                    self.frames
                ),
            );
        }
        let Some(len) = self.umem_len() else {
            return bad(
                "frames",
                format!(
                    "{} × frame_size {} does not fit in memory",
                    self.frames, self.frame_size
                ),
            );
        };
        if !self.ring_size.is_power_of_two() {
            return bad(
                "ring_size",
                format!("{} must be a power of two", self.ring_size),
            );
        }
        Ok(len)
    }

    fn umem_len(&self) -> Option<usize> {
        (self.frames as usize)
            .checked_mul(self.frame_size as usize)
            .filter(|&n| n <= isize::MAX as usize)
    }

    /// Frames that circulate through the fill and RX rings. No more than the fill ring holds, so
    /// recycling a received frame always finds room there.
    fn rx_frames(&self) -> u32 {
        (self.frames / 2).min(self.ring_size)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// The socket's counters (`XDP_STATISTICS`): where frames went that never reached the RX ring,
/// or descriptors the kernel refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for any reason (no fill ring entry, frame too big for a UMEM frame, ...).
    pub rx_dropped: u64,
    /// Fill ring descriptors the kernel refused.
    pub rx_invalid_descs: u64,
    /// TX ring descriptors the kernel refused.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full (the reader is too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

impl std::fmt::Display for XskStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rx_dropped={} rx_invalid_descs={} tx_invalid_descs={} rx_ring_full={} rx_fill_ring_empty_descs={} tx_ring_empty_descs={}",
            self.rx_dropped,
            self.rx_invalid_descs,
            self.tx_invalid_descs,
            self.rx_ring_full,
            self.rx_fill_ring_empty_descs,
            self.tx_ring_empty_descs
        )
    }
}

/// An mmap'd region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Private anonymous memory (the UMEM).
    fn anonymous(len: usize) -> Result<Mapping, Errno> {
        Mapping::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    }

    fn new(len: usize, flags: libc::c_int, fd: RawFd, offset: u64) -> Result<Mapping, Errno> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
        // SAFETY: a fresh mapping chosen by the kernel (NULL hint), so no existing memory is
        // replaced; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Errno::EFAULT)?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped once in `new` with this length; nothing borrows it past the owner.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring shared with the kernel: a power-of-two array of `T` plus producer and consumer
/// indexes that run freely (wrapping u32) and are masked on access.
struct Ring<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our producer index (producer rings) or the last producer index seen (consumer rings).
    cached_prod: u32,
    /// Our consumer index (consumer rings) or the last consumer index seen plus `size`, i.e. the
    /// producer index up to which we may write (producer rings).
    cached_cons: u32,
    /// Keeps the memory the pointers above point into; declared last so it outlives their use.
    _map: Mapping,
    _t: PhantomData<T>,
}

/// Where in the mapping the kernel put a ring's parts (`struct xdp_ring_offset`).
#[derive(Debug, Clone, Copy)]
struct RingOffsets {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(o: libc::xdp_ring_offset) -> RingOffsets {
        RingOffsets {
            producer: o.producer,
            consumer: o.consumer,
            desc: o.desc,
            flags: o.flags,
        }
    }
}

enum Side {
    /// We write descriptors (fill, TX).
    Producer,
    /// We read descriptors (RX, completion).
    Consumer,
}

impl<T: Copy> Ring<T> {
    /// Take over `map`, laid out as `off` says, as a ring of `size` entries.
    fn new(map: Mapping, off: RingOffsets, size: u32, side: Side) -> Result<Ring<T>, Errno> {
        let need = |o: u64, n: usize| {
            o.checked_add(n as u64)
                .is_some_and(|end| end <= map.len as u64)
        };
        let descs_len = size as usize * size_of::<T>();
        let aligned = |o: u64, a: usize| o % a as u64 == 0;
        if !(need(off.producer, 4)
            && need(off.consumer, 4)
            && need(off.flags, 4)
            && need(off.desc, descs_len))
            || !(aligned(off.producer, 4) && aligned(off.consumer, 4) && aligned(off.flags, 4))
            || !aligned(off.desc, std::mem::align_of::<T>())
        {
            return Err(Errno::EINVAL);
        }
        let at = |o: u64| {
            // SAFETY: `o` plus the field's size lies inside the mapping (checked above).
            unsafe { NonNull::new_unchecked(map.ptr.as_ptr().add(o as usize)) }
        };
        let mut ring = Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
            _t: PhantomData,
        };
        ring.cached_prod = ring.producer().load(Ordering::Relaxed);
        ring.cached_cons = ring.consumer().load(Ordering::Relaxed);
        if let Side::Producer = side {
            ring.cached_cons = ring.cached_cons.wrapping_add(size);
        }
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 inside our live mapping; the kernel only touches it atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asked for a syscall to make progress (`XDP_RING_NEED_WAKEUP`).
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`. Relaxed is enough: the flag is a hint, re-read every time.
        let flags = unsafe { self.flags.as_ref() }.load(Ordering::Relaxed);
        flags & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // Producer side.

    /// Free entries, at most as many as needed: the kernel's consumer index is only read (an
    /// Acquire, so its reads of the entries are done) when the cached view has too few.
    fn free(&mut self, n: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= n {
            return free;
        }
        self.cached_cons = self
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Write `v` at the next reserved entry; the caller checked [`Ring::free`] first.
    fn push(&mut self, v: T) {
        let i = (self.cached_prod & self.mask) as usize;
        // SAFETY: i <= mask < size, inside the descriptor array; the entry belongs to us until
        // `submit` publishes it.
        unsafe { self.descs.as_ptr().add(i).write(v) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publish every pushed entry. Release: the entries are written before the kernel can see
    /// an index that covers them.
    fn submit(&mut self) {
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    // Consumer side.

    /// Entries ready to read, at most `max`. The producer index is read with Acquire so the
    /// entries it covers are read after the kernel wrote them.
    fn available(&mut self, max: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready == 0 {
            self.cached_prod = self.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        ready.min(max)
    }

    /// The `k`-th entry after our consumer index; `k` below what [`Ring::available`] returned.
    fn peek(&self, k: u32) -> T {
        let i = (self.cached_cons.wrapping_add(k) & self.mask) as usize;
        // SAFETY: inside the descriptor array, and published by the kernel (k < available).
        unsafe { self.descs.as_ptr().add(i).read() }
    }

    /// Hand `n` read entries back. Release: our reads of them happen before the kernel may
    /// overwrite them.
    fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

/// A bound AF_XDP socket. Closed and unmapped on drop (which also removes it from every XSKMAP
/// it was put into).
pub struct Xsk {
    // Fields drop in order: the socket closes before its rings and UMEM are unmapped.
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    umem: Mapping,
    frame_size: u32,
    need_wakeup: bool,
    /// TX frames not on the TX ring and not in flight.
    tx_free: Vec<u64>,
    /// TX frames submitted and not yet back through the completion ring.
    tx_outstanding: u32,
    ifindex: u32,
    queue: u32,
}

// SAFETY: the raw pointers all point into mappings this value owns, and every method that
// touches a ring takes `&mut self`, so moving it to another thread moves the only access.
unsafe impl Send for Xsk {}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    opt: libc::c_int,
    val: &T,
    step: &'static str,
) -> Result<(), XskError> {
    // SAFETY: `val` is a live, initialised T of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(XskError::last(step));
    }
    Ok(())
}

/// getsockopt into a zeroed T; older kernels may fill only a prefix, which stays zero.
fn getsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, step: &'static str) -> Result<T, XskError> {
    // SAFETY: T is one of the plain C structs of if_xdp.h, for which zero is valid.
    let mut val: T = unsafe { zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `val`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (&mut val as *mut T).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(XskError::last(step));
    }
    Ok(val)
}

fn map_ring<T: Copy>(
    fd: BorrowedFd<'_>,
    off: libc::xdp_ring_offset,
    size: u32,
    pgoff: u64,
    side: Side,
    step: &'static str,
) -> Result<Ring<T>, XskError> {
    let len = off.desc as usize + size as usize * size_of::<T>();
    let map = Mapping::new(
        len,
        libc::MAP_SHARED | libc::MAP_POPULATE,
        fd.as_raw_fd(),
        pgoff,
    )
    .map_err(|e| XskError::sys(step, e))?;
    Ring::new(map, off.into(), size, side).map_err(|e| XskError::sys(step, e))
}

/// The UMEM: anonymous memory registered on the socket, `config.frames` frames of
/// `config.frame_size`.
fn register_umem(fd: BorrowedFd<'_>, config: &XskConfig) -> Result<Mapping, XskError> {
    let umem_len = config.validated_umem_len()?;
    let umem = Mapping::anonymous(umem_len).map_err(|e| XskError::sys("mmap UMEM", e))?;
    let reg = libc::xdp_umem_reg {
        addr: umem.ptr.as_ptr() as u64,
        len: umem_len as u64,
        chunk_size: config.frame_size,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, libc::XDP_UMEM_REG, &reg, "setsockopt XDP_UMEM_REG")?;
    Ok(umem)
}

/// The four rings of one socket, each `n` entries, sized on the socket then mapped.
struct Rings {
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
}

impl Rings {
    fn map(fd: BorrowedFd<'_>, n: u32) -> Result<Rings, XskError> {
        for (opt, step) in [
            (libc::XDP_UMEM_FILL_RING, "setsockopt XDP_UMEM_FILL_RING"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                "setsockopt XDP_UMEM_COMPLETION_RING",
            ),
            (libc::XDP_RX_RING, "setsockopt XDP_RX_RING"),
            (libc::XDP_TX_RING, "setsockopt XDP_TX_RING"),
        ] {
            setsockopt(fd, opt, &n, step)?;
        }
        let off: libc::xdp_mmap_offsets =
            getsockopt(fd, libc::XDP_MMAP_OFFSETS, "getsockopt XDP_MMAP_OFFSETS")?;
        Ok(Rings {
            rx: map_ring(
                fd,
                off.rx,
                n,
                libc::XDP_PGOFF_RX_RING as u64,
                Side::Consumer,
                "mmap RX ring",
            )?,
            tx: map_ring(
                fd,
                off.tx,
                n,
                libc::XDP_PGOFF_TX_RING as u64,
                Side::Producer,
                "mmap TX ring",
            )?,
            fill: map_ring(
                fd,
                off.fr,
                n,
                libc::XDP_UMEM_PGOFF_FILL_RING,
                Side::Producer,
                "mmap fill ring",
            )?,
            comp: map_ring(
                fd,
                off.cr,
                n,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING,
                Side::Consumer,
                "mmap completion ring",
            )?,
        })
    }
}

impl Xsk {
    /// Create a socket with `config`'s UMEM and rings and bind it to `queue` of `ifindex` in the
    /// calling thread's netns. The fill ring starts full, so the socket receives as soon as an
    /// XDP program redirects to it (see [`Xsk::insert_into`]).
    ///
    /// A queue another socket used a moment ago can still answer `EBUSY`: the kernel releases a
    /// closed socket's hold on its queue from a workqueue.
    pub fn bind(ifindex: u32, queue: u32, config: &XskConfig) -> Result<Xsk, XskError> {
        config.validate()?;
        Xsk::bind_socket(Xsk::socket()?, ifindex, queue, config)
    }

    /// A fresh, unbound `socket(AF_XDP)`: what a privileged launcher hands to an unprivileged
    /// consumer (QEMU's `sock-fds`). Creating one needs `CAP_NET_RAW` (`xsk_create`,
    /// net/xdp/xsk.c); registering a UMEM on it and binding it need no capability.
    pub fn socket() -> Result<OwnedFd, XskError> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(XskError::last("socket(AF_XDP)"));
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// As [`Xsk::bind`], on a socket from [`Xsk::socket`] (possibly received from another
    /// process), the way QEMU treats its `sock-fds`: this process registers its own UMEM on it
    /// and binds it. The UMEM is pinned memory charged to this user's `RLIMIT_MEMLOCK` unless it
    /// has `CAP_IPC_LOCK` (`xdp_umem_account_pages`, net/xdp/xdp_umem.c): `ENOBUFS` when over.
    pub fn bind_socket(
        fd: OwnedFd,
        ifindex: u32,
        queue: u32,
        config: &XskConfig,
    ) -> Result<Xsk, XskError> {
        let umem = register_umem(fd.as_fd(), config)?;
        let rings = Rings::map(fd.as_fd(), config.ring_size)?;
        let fs = u64::from(config.frame_size);
        let rx_frames = config.rx_frames();
        let mut xsk = Xsk {
            fd,
            rx: rings.rx,
            tx: rings.tx,
            fill: rings.fill,
            comp: rings.comp,
            umem,
            frame_size: config.frame_size,
            need_wakeup: config.need_wakeup,
            // Frames past the RX share are TX's, handed out from the lowest.
            tx_free: (u64::from(rx_frames)..u64::from(config.frames))
                .rev()
                .map(|i| i * fs)
                .collect(),
            tx_outstanding: 0,
            ifindex,
            queue,
        };
        // The fill ring starts full, so frames are received from the first redirect on.
        let free = xsk.fill.free(rx_frames);
        for i in 0..u64::from(rx_frames.min(free)) {
            xsk.fill.push(i * fs);
        }
        xsk.fill.submit();
        xsk.bind_to_queue(config)?;
        Ok(xsk)
    }

    fn bind_to_queue(&self, config: &XskConfig) -> Result<(), XskError> {
        let mut flags = 0;
        if config.copy {
            flags |= libc::XDP_COPY;
        }
        if config.need_wakeup {
            flags |= libc::XDP_USE_NEED_WAKEUP;
        }
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: self.ifindex,
            sxdp_queue_id: self.queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a valid sockaddr_xdp of the length we pass.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(XskError::Bind {
                ifindex: self.ifindex,
                queue: self.queue,
                errno: Errno::last(),
            });
        }
        Ok(())
    }

    /// The socket, e.g. for an XSKMAP value or poll(2).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The device bound to (in the netns of the thread that bound it).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The queue bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Put this socket into the XSKMAP pinned at `xskmap_pin`, at `key` (a pod's virtual queue
    /// in the dispatcher's pod maps), replacing what is there.
    pub fn insert_into(&self, xskmap_pin: &Path, key: u32) -> Result<(), XskError> {
        let map_err = |step, errno| XskError::Map {
            step,
            path: xskmap_pin.to_path_buf(),
            key,
            errno,
        };
        let map = sys::obj_get(xskmap_pin).map_err(|e| map_err("BPF_OBJ_GET", e))?;
        let value = self.fd.as_raw_fd() as u32;
        sys::map_update(map.as_fd(), &key, &value, 0).map_err(|e| map_err("BPF_MAP_UPDATE_ELEM", e))
    }

    /// [`Xsk::insert_into`] for a socket this process only holds a descriptor of, e.g. one it
    /// created with [`Xsk::socket`] and handed to a consumer that bound it (QEMU's `sock-fds`
    /// inserts into no map). The kernel takes it once its RX ring exists (`xsk_map_update_elem`,
    /// net/xdp/xskmap.c: `ENOBUFS` before).
    pub fn insert_fd_into(fd: BorrowedFd<'_>, xskmap_pin: &Path, key: u32) -> Result<(), XskError> {
        let map_err = |step, errno| XskError::Map {
            step,
            path: xskmap_pin.to_path_buf(),
            key,
            errno,
        };
        let map = sys::obj_get(xskmap_pin).map_err(|e| map_err("BPF_OBJ_GET", e))?;
        let value = fd.as_raw_fd() as u32;
        sys::map_update(map.as_fd(), &key, &value, 0).map_err(|e| map_err("BPF_MAP_UPDATE_ELEM", e))
    }

    /// Wait up to `timeout` for frames, then return the ones ready, at most `max`, copied out
    /// of the UMEM (their frames go straight back to the fill ring). Empty when none came.
    pub fn recv(&mut self, max: usize, timeout: Duration) -> Result<Vec<Vec<u8>>, XskError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let start = Instant::now();
        loop {
            self.drain(max - out.len(), |frame| out.push(frame.to_vec()))?;
            let left = timeout.saturating_sub(start.elapsed());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            self.wait_rx(left)?;
        }
    }

    /// Receive for `duration` without copying anything: (frames, bytes) that arrived.
    pub fn count(&mut self, duration: Duration) -> Result<(u64, u64), XskError> {
        let (mut frames, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        loop {
            let n = self.drain(usize::MAX, |frame| {
                frames += 1;
                bytes += frame.len() as u64;
            })?;
            let left = duration.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok((frames, bytes));
            }
            if n == 0 {
                self.wait_rx(left)?;
            }
        }
    }

    /// Hand every ready RX frame (at most `max`) to `f`, then recycle it into the fill ring.
    /// Only as many are taken as the fill ring has room for, so no frame is ever lost; with no
    /// more receive frames than the fill ring holds, that is all of them.
    fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, XskError> {
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let ready = self.rx.available(want);
        if ready == 0 {
            return Ok(0);
        }
        let n = ready.min(self.fill.free(ready));
        let chunk_mask = !(u64::from(self.frame_size) - 1);
        for k in 0..n {
            let d = self.rx.peek(k);
            let frame = self
                .umem_slice(d.addr, d.len)
                .ok_or(XskError::BadDescriptor {
                    ring: "RX",
                    addr: d.addr,
                    len: d.len,
                })?;
            f(frame);
            self.fill.push(d.addr & chunk_mask);
        }
        self.fill.submit();
        self.rx.release(n);
        Ok(n as usize)
    }

    fn umem_slice(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(u64::from(len))?;
        if end > self.umem.len as u64 {
            return None;
        }
        // SAFETY: inside the UMEM (checked). The kernel wrote this frame before publishing its
        // descriptor and will not write it again until we give it back through the fill ring.
        Some(unsafe {
            std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// Block until the RX ring has something or `timeout` passes (or a signal interrupts).
    fn wait_rx(&mut self, timeout: Duration) -> Result<(), XskError> {
        if self.need_wakeup && self.fill.needs_wakeup() {
            // SAFETY: a zero-length receive: no buffer is written.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            if r < 0
                && !matches!(
                    Errno::last(),
                    Errno::EAGAIN | Errno::EINTR | Errno::EBUSY | Errno::ENOBUFS
                )
            {
                return Err(XskError::last("recvfrom (RX wakeup)"));
            }
        }
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 && Errno::last() != Errno::EINTR {
            return Err(XskError::last("poll"));
        }
        Ok(())
    }

    /// Send `frames` out of the bound queue and wait until the kernel has sent them all
    /// (they came back through the completion ring). Returns how many did; fewer than
    /// `frames.len()` only when the kernel made no progress for a second ([`Xsk::stats`] may say
    /// why). Each frame is copied into a UMEM frame, so it must be 1..=`frame_size` bytes.
    pub fn send(&mut self, frames: &[&[u8]]) -> Result<usize, XskError> {
        let max = self.frame_size as usize;
        if let Some((index, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.is_empty() || f.len() > max)
        {
            return Err(XskError::FrameLength {
                index,
                len: f.len(),
                max,
            });
        }
        // Completions first pay off what an earlier, stalled call left in flight.
        let mut owed = self.tx_outstanding as usize;
        let (mut queued, mut sent) = (0usize, 0usize);
        let mut progress = Instant::now();
        while sent < frames.len() {
            let mut moved = false;
            let done = self.reap_completions()?;
            if done > 0 {
                moved = true;
                let old = done.min(owed);
                owed -= old;
                sent += done - old;
            }
            let want = (frames.len() - queued)
                .min(self.tx_free.len())
                .min(u32::MAX as usize) as u32;
            let n = want.min(self.tx.free(want));
            for (f, addr) in frames[queued..queued + n as usize]
                .iter()
                .zip(self.tx_free.drain(self.tx_free.len() - n as usize..).rev())
            {
                // SAFETY: a frame-aligned TX frame inside the UMEM that we own (it was in
                // tx_free: on no ring, not in flight), and f.len() <= frame_size (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        f.as_ptr(),
                        self.umem.ptr.as_ptr().add(addr as usize),
                        f.len(),
                    );
                }
                self.tx.push(libc::xdp_desc {
                    addr,
                    len: f.len() as u32,
                    options: 0,
                });
            }
            if n > 0 {
                self.tx.submit();
                self.tx_outstanding += n;
                queued += n as usize;
                moved = true;
            }
            if sent == frames.len() {
                break;
            }
            self.kick_tx()?;
            if moved {
                progress = Instant::now();
            } else if progress.elapsed() > TX_STALL {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        Ok(sent)
    }

    /// Take finished TX frames back from the completion ring.
    fn reap_completions(&mut self) -> Result<usize, XskError> {
        let n = self.comp.available(u32::MAX);
        let chunk_mask = !(u64::from(self.frame_size) - 1);
        for k in 0..n {
            let addr = self.comp.peek(k);
            if addr >= self.umem.len as u64 {
                return Err(XskError::BadDescriptor {
                    ring: "completion",
                    addr,
                    len: 0,
                });
            }
            self.tx_free.push(addr & chunk_mask);
        }
        self.comp.release(n);
        self.tx_outstanding = self.tx_outstanding.saturating_sub(n);
        Ok(n as usize)
    }

    /// In copy mode the kernel only transmits inside sendmsg, at most a small batch per call, so
    /// `send` kicks after every round. Transient refusals (completion ring full, driver busy)
    /// are retried by the caller's loop.
    fn kick_tx(&mut self) -> Result<(), XskError> {
        if self.need_wakeup && !self.tx.needs_wakeup() {
            return Ok(());
        }
        // SAFETY: a zero-length send: no buffer is read.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0
            && !matches!(
                Errno::last(),
                Errno::EAGAIN | Errno::EBUSY | Errno::ENOBUFS | Errno::EINTR
            )
        {
            return Err(XskError::last("sendto (TX kick)"));
        }
        Ok(())
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> Result<XskStats, XskError> {
        let s: libc::xdp_statistics = getsockopt(
            self.fd.as_fd(),
            libc::XDP_STATISTICS,
            "getsockopt XDP_STATISTICS",
        )?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.fd.as_raw_fd())
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("frame_size", &self.frame_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> XskConfig {
        XskConfig::default()
    }

    #[test]
    fn default_config_is_valid_and_modest() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.umem_len(), Some(4 << 20));
        assert_eq!(c.rx_frames(), 1024);
        assert!(c.copy);
    }

    #[test]
    fn config_errors_name_the_field() {
        let field = |c: XskConfig| match c.validate() {
            Err(XskError::Config { field, .. }) => field,
            other => panic!("{c:?}: expected a config error, got {other:?}"),
        };
        assert_eq!(
            field(XskConfig {
                ring_size: 1000,
                ..cfg()
            }),
            "ring_size"
        );
        assert_eq!(
            field(XskConfig {
                ring_size: 0,
                ..cfg()
            }),
            "ring_size"
        );
        assert_eq!(
            field(XskConfig {
                frame_size: 3000,
                ..cfg()
            }),
            "frame_size"
        );
        assert_eq!(
            field(XskConfig {
                frame_size: 1024,
                ..cfg()
            }),
            "frame_size"
        );
        assert_eq!(
            field(XskConfig {
                frame_size: 1 << 20,
                ..cfg()
            }),
            "frame_size"
        );
        assert_eq!(field(XskConfig { frames: 1, ..cfg() }), "frames");
        let msg = XskConfig {
            ring_size: 6,
            ..cfg()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("ring_size") && msg.contains("power of two"),
            "{msg}"
        );
    }

    #[test]
    fn receive_frames_never_exceed_the_fill_ring() {
        assert_eq!(
            XskConfig {
                frames: 16,
                ring_size: 4,
                ..cfg()
            }
            .rx_frames(),
            4
        );
        assert_eq!(
            XskConfig {
                frames: 16,
                ring_size: 64,
                ..cfg()
            }
            .rx_frames(),
            8
        );
        assert_eq!(
            XskConfig {
                frames: 3,
                ring_size: 1,
                ..cfg()
            }
            .rx_frames(),
            1
        );
    }

    #[test]
    fn bind_validates_before_touching_the_kernel() {
        let err = Xsk::bind(
            1,
            0,
            &XskConfig {
                ring_size: 3,
                ..cfg()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                XskError::Config {
                    field: "ring_size",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.errno(), None);
    }

    #[test]
    fn errors_keep_the_errno_and_name_the_step() {
        let e = XskError::Bind {
            ifindex: 7,
            queue: 3,
            errno: Errno::EBUSY,
        };
        assert_eq!(e.errno(), Some(Errno::EBUSY));
        let s = e.to_string();
        assert!(
            s.contains("ifindex 7 queue 3") && s.contains("EBUSY") && s.contains("already uses"),
            "{s}"
        );
        let e = XskError::sys("setsockopt XDP_UMEM_REG", Errno::ENOMEM);
        assert!(
            e.to_string().starts_with("setsockopt XDP_UMEM_REG: "),
            "{e}"
        );
    }

    /// A ring over ordinary memory, with this test playing the kernel on the other side.
    fn fake_ring<T: Copy>(size: u32, side: Side, start: u32) -> Ring<T> {
        let off = RingOffsets {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        let map = Mapping::anonymous(192 + size as usize * size_of::<T>()).unwrap();
        // SAFETY: both inside the fresh mapping, aligned.
        unsafe {
            map.ptr.as_ptr().cast::<u32>().write(start);
            map.ptr.as_ptr().add(64).cast::<u32>().write(start);
        }
        Ring::new(map, off, size, side).unwrap()
    }

    #[test]
    fn producer_ring_fills_up_and_frees_as_the_consumer_moves_across_the_u32_wrap() {
        let start = u32::MAX - 2;
        let mut r: Ring<u64> = fake_ring(4, Side::Producer, start);
        assert_eq!(r.free(1), 4);
        for v in 0..4 {
            r.push(v);
        }
        r.submit();
        assert_eq!(r.producer().load(Ordering::Relaxed), start.wrapping_add(4));
        assert_eq!(r.free(1), 0, "full ring reported free entries");
        // The "kernel" consumes two.
        r.consumer().store(start.wrapping_add(2), Ordering::Release);
        assert_eq!(r.free(1), 2);
        r.push(4);
        r.push(5);
        r.submit();
        // SAFETY: the four entries of the fake ring, all written above.
        let descs: Vec<u64> = (0..4)
            .map(|i| unsafe { r.descs.as_ptr().add(i).read() })
            .collect();
        // start & 3 == 1: entries went to slots 1, 2, 3, 0, then 1, 2 again.
        assert_eq!(descs, [3, 4, 5, 2]);
    }

    #[test]
    fn consumer_ring_reads_what_was_published_and_releases_it() {
        let start = u32::MAX - 1;
        let mut r: Ring<u64> = fake_ring(4, Side::Consumer, start);
        assert_eq!(r.available(8), 0);
        for k in 0..3u32 {
            let i = (start.wrapping_add(k) & 3) as usize;
            // SAFETY: i <= mask, inside the fake ring's entries.
            unsafe { r.descs.as_ptr().add(i).write(100 + u64::from(k)) };
        }
        r.producer().store(start.wrapping_add(3), Ordering::Release);
        assert_eq!(r.available(2), 2);
        assert_eq!((r.peek(0), r.peek(1)), (100, 101));
        r.release(2);
        assert_eq!(r.consumer().load(Ordering::Relaxed), start.wrapping_add(2));
        assert_eq!(r.available(8), 1);
        assert_eq!(r.peek(0), 102);
        r.release(1);
        assert_eq!(r.available(8), 0);
    }

    #[test]
    fn ring_offsets_outside_the_mapping_are_refused() {
        let map = Mapping::anonymous(4096).unwrap();
        let off = RingOffsets {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        assert!(matches!(
            Ring::<u64>::new(map, off, 1024, Side::Producer),
            Err(Errno::EINVAL)
        ));
    }
}
