//! The dispatcher's queue table (`nkc_queues` in bpf/dispatcher.bpf.c), mapped into the loader.
//!
//! The table is the program's `.data.queues` global array: one mmapable ARRAY map with a single
//! 8 KiB value. The loader maps the pinned map and reads and writes each 8-byte entry with one
//! atomic 64-bit access, matching the dispatcher's single 64-bit load, so no frame ever sees half
//! an update. (A map update through bpf(2) copies values with a plain memcpy, which gives no such
//! guarantee.)

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use libbpf_rs::libbpf_sys;
use nix::errno::Errno;

use super::error::XdpError;
use super::skel::types::{nkc_action, nkc_queue};
use super::MAX_QUEUES;
use crate::bpf::sys;

/// Entry size (checked against the generated type in the unit tests).
pub(crate) const ENTRY: usize = 8;

/// Encode an entry as the 64-bit word the dispatcher loads (native byte order: the struct's
/// in-memory image).
pub(crate) fn pack(e: &nkc_queue) -> u64 {
    let mut b = [0u8; ENTRY];
    b[0..4].copy_from_slice(&e.vqueue.to_ne_bytes());
    b[4] = e.action.0;
    b[5] = e.base.0;
    b[6..8].copy_from_slice(&e.reserved.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// Decode [`pack`].
pub(crate) fn unpack(raw: u64) -> nkc_queue {
    let b = raw.to_ne_bytes();
    nkc_queue {
        vqueue: u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")),
        action: nkc_action(b[4]),
        base: nkc_action(b[5]),
        reserved: u16::from_ne_bytes(b[6..8].try_into().expect("2 bytes")),
    }
}

/// A shared, writable mapping of the queue table.
#[derive(Debug)]
pub(crate) struct QueueTable {
    base: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics; it may be used and
// unmapped from any thread.
unsafe impl Send for QueueTable {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for QueueTable {}

impl QueueTable {
    /// Map the table map `fd` (pinned at `pin`, for error messages) after checking that it is
    /// what the dispatcher declares: an mmapable ARRAY of one value holding MAX_QUEUES entries.
    pub(crate) fn map(fd: BorrowedFd<'_>, pin: &Path) -> Result<QueueTable, XdpError> {
        let info =
            sys::map_info(fd).map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(pin), e))?;
        let want = MAX_QUEUES as usize * ENTRY;
        if info.type_ != libbpf_sys::BPF_MAP_TYPE_ARRAY
            || info.max_entries != 1
            || info.value_size as usize != want
            || info.map_flags & libbpf_sys::BPF_F_MMAPABLE == 0
        {
            return Err(XdpError::Corrupt {
                path: pin.to_path_buf(),
                reason: format!(
                    "queue table is map type {} with {} x {} bytes, flags {:#x}; expected one mmapable {want}-byte array value",
                    info.type_, info.max_entries, info.value_size, info.map_flags
                ),
            });
        }
        // SAFETY: mapping a BPF array map fd; the kernel bounds the mapping to the map's pages,
        // which `want` does not exceed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                want,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(XdpError::sys("mmap", Some(pin), Errno::last()));
        }
        let base =
            NonNull::new(ptr.cast::<AtomicU64>()).expect("mmap never returns NULL on success");
        Ok(QueueTable { base, len: want })
    }

    fn slot(&self, queue: u32) -> &AtomicU64 {
        assert!(queue < MAX_QUEUES, "queue {queue} beyond the table");
        // SAFETY: in bounds (checked above); the mapping is page-aligned, so every 8-byte entry
        // is 8-aligned; it lives as long as `self`.
        unsafe { &*self.base.as_ptr().add(queue as usize) }
    }

    /// Entry `queue`.
    pub(crate) fn get(&self, queue: u32) -> nkc_queue {
        unpack(self.slot(queue).load(Ordering::SeqCst))
    }

    /// Replace entry `queue` in one atomic store. SeqCst orders it after the bpf(2) map updates
    /// the caller made before (see "Update ordering" in dispatcher.rs).
    pub(crate) fn set(&self, queue: u32, e: &nkc_queue) {
        self.slot(queue).store(pack(e), Ordering::SeqCst);
    }

    /// Every entry, by queue.
    pub(crate) fn all(&self) -> Vec<nkc_queue> {
        (0..MAX_QUEUES).map(|q| self.get(q)).collect()
    }
}

impl Drop for QueueTable {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
