//! Thin bpf(2) wrappers over libbpf-sys that keep the errno typed: the only place with raw
//! libbpf-sys calls for maps, programs, pins and links (XDP, tcx, netkit).
//!
//! libbpf-rs' own map and link methods fold the errno into an opaque error, but the loaders must
//! tell e.g. `ENOENT` (no entry / no pin) from `EBUSY` (XDP already attached). libbpf ≥ 1.0
//! returns `-errno` from every low-level call, which is what these wrappers decode.

use std::ffi::CString;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libbpf_rs::libbpf_sys as sys;
use nix::errno::Errno;

/// Decode a libbpf return value: negative is `-errno`.
fn check(ret: i32) -> Result<i32, Errno> {
    if ret < 0 {
        Err(Errno::from_raw(-ret))
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: a non-negative return of these libbpf calls is a new fd owned by the caller.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `BPF_OBJ_GET`: open a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd, Errno> {
    let p = c_path(path)?;
    // SAFETY: `p` is a valid NUL-terminated string for the duration of the call.
    fd_from(unsafe { sys::bpf_obj_get(p.as_ptr()) })
}

/// `BPF_OBJ_PIN` of `fd` as `name` in the directory `dir` (`BPF_F_PATH_FD`, Linux ≥ 6.5): the
/// kernel creates the pin relative to the handle the caller verified, not by re-resolving a
/// path. kernel/bpf/syscall.c `bpf_obj_pin()` takes `attr->path_fd` when `file_flags` has
/// `BPF_F_PATH_FD`; kernel/bpf/inode.c `bpf_obj_do_pin()` resolves the name with
/// `start_creating_user_path(path_fd, …)`, which creates a new dentry and fails with `EEXIST` on
/// any existing entry (a planted symlink included) instead of following it, and refuses
/// (`EPERM`) a parent that is not a bpffs directory.
pub fn obj_pin_at(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    if name.is_empty() || name.contains('/') {
        return Err(Errno::EINVAL);
    }
    let p = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let opts = sys::bpf_obj_pin_opts {
        sz: size_of::<sys::bpf_obj_pin_opts>() as _,
        file_flags: sys::BPF_F_PATH_FD,
        path_fd: dir.as_raw_fd(),
    };
    // SAFETY: valid fds, NUL-terminated name and options for the duration of the call.
    check(unsafe { sys::bpf_obj_pin_opts(fd.as_raw_fd(), p.as_ptr(), &opts) }).map(drop)
}

/// `BPF_OBJ_GET` of the pin behind `pin`, an `O_PATH` handle the caller opened without
/// following symlinks (see `crate::safefs::Dir::open_file_path`).
///
/// `BPF_OBJ_GET` takes a name, and kernel/bpf/inode.c `bpf_obj_do_get()` looks it up with
/// `LOOKUP_FOLLOW` even with `BPF_F_PATH_FD`, so a dirfd and a name would follow a symlink
/// swapped in after any check. The handle's `/proc/thread-self/fd/<n>` magic link instead
/// resolves to exactly the inode the handle holds (fs/proc/fd.c `proc_fd_link()`), so the object
/// opened is the one that was checked. `bpf_obj_do_get()` then still requires a bpffs object
/// inode (`bpf_inode_type()`, `EACCES` otherwise).
pub fn obj_get_fd(pin: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let p = CString::new(format!("/proc/thread-self/fd/{}", pin.as_raw_fd()))
        .expect("no NUL in a number");
    // SAFETY: `p` is a valid NUL-terminated string for the duration of the call.
    fd_from(unsafe { sys::bpf_obj_get(p.as_ptr()) })
}

/// `BPF_MAP_UPDATE_ELEM` with plain-old-data key and value.
pub fn map_update<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    key: &K,
    value: &V,
    flags: u64,
) -> Result<(), Errno> {
    // SAFETY: key and value point to initialised memory of the sizes the map was created with
    // (callers pass the map's own key/value types).
    check(unsafe {
        sys::bpf_map_update_elem(
            fd.as_raw_fd(),
            (key as *const K).cast(),
            (value as *const V).cast(),
            flags,
        )
    })
    .map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM`; `None` for `ENOENT`.
pub fn map_lookup<K: Copy, V: Copy>(fd: BorrowedFd<'_>, key: &K) -> Result<Option<V>, Errno> {
    let mut value = std::mem::MaybeUninit::<V>::zeroed();
    // SAFETY: the kernel writes exactly value_size bytes, which is size_of::<V>() for callers'
    // map/type pairs.
    match check(unsafe {
        sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            (key as *const K).cast(),
            value.as_mut_ptr().cast(),
        )
    }) {
        // SAFETY: V is plain old data and fully written by the kernel (or zeroed).
        Ok(_) => Ok(Some(unsafe { value.assume_init() })),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_LOOKUP_ELEM` into a caller-sized buffer (per-CPU maps).
pub fn map_lookup_raw<K: Copy>(fd: BorrowedFd<'_>, key: &K, value: &mut [u8]) -> Result<(), Errno> {
    // SAFETY: the caller sizes `value` for the map (value size rounded to 8 × possible CPUs).
    check(unsafe {
        sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            (key as *const K).cast(),
            value.as_mut_ptr().cast(),
        )
    })
    .map(drop)
}

/// `BPF_MAP_DELETE_ELEM`; `Ok(false)` for `ENOENT`.
pub fn map_delete<K: Copy>(fd: BorrowedFd<'_>, key: &K) -> Result<bool, Errno> {
    // SAFETY: key points to key_size bytes.
    match check(unsafe { sys::bpf_map_delete_elem(fd.as_raw_fd(), (key as *const K).cast()) }) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_CREATE` of an XSKMAP with `max_entries` slots.
pub fn xskmap_create(name: &str, max_entries: u32) -> Result<OwnedFd, Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid name; NULL opts means defaults (no flags).
    fd_from(unsafe {
        sys::bpf_map_create(
            sys::BPF_MAP_TYPE_XSKMAP,
            name.as_ptr(),
            4,
            4,
            max_entries,
            std::ptr::null(),
        )
    })
}

/// `BPF_LINK_CREATE` for XDP on `ifindex` (in the calling thread's netns).
pub fn xdp_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    xdp_flags: u32,
) -> Result<OwnedFd, Errno> {
    // SAFETY: zero is a valid bit pattern for these C option structs.
    let mut opts: sys::bpf_link_create_opts = unsafe { zeroed() };
    opts.sz = size_of::<sys::bpf_link_create_opts>() as _;
    opts.flags = xdp_flags;
    // SAFETY: valid fd and options.
    fd_from(unsafe { sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, sys::BPF_XDP, &opts) })
}

/// `BPF_LINK_UPDATE` with `BPF_F_REPLACE`: swap the link's program for `new` only if it still
/// runs `old` (the kernel answers `EPERM` otherwise).
pub fn link_update(
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let opts = sys::bpf_link_update_opts {
        sz: size_of::<sys::bpf_link_update_opts>() as _,
        flags: sys::BPF_F_REPLACE,
        old_prog_fd: old.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: valid fds and options.
    check(unsafe { sys::bpf_link_update(link.as_raw_fd(), new.as_raw_fd(), &opts) }).map(drop)
}

/// `BPF_LINK_DETACH`: detach the link from its hook even if other fds or pins still hold it.
pub fn link_detach(link: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: valid fd.
    check(unsafe { sys::bpf_link_detach(link.as_raw_fd()) }).map(drop)
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall wrapper.
    fd_from(unsafe { sys::bpf_prog_get_fd_by_id(id) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a program.
pub fn prog_info(fd: BorrowedFd<'_>) -> Result<sys::bpf_prog_info, Errno> {
    // SAFETY: zero is valid for the info struct; the kernel fills at most `len` bytes.
    let mut info: sys::bpf_prog_info = unsafe { zeroed() };
    let mut len = size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: as above.
    check(unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    Ok(info)
}

/// The JIT's machine code of a program (`BPF_OBJ_GET_INFO_BY_FD` with `jited_prog_insns`), for
/// reading where a program's per-packet instructions go (`make bench` section 4). Empty when the
/// program is not JIT'd. Debian's bpftool cannot dump it: it is built without libbfd and then
/// refuses `dump jited` even to a file.
pub fn prog_jited_image(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let len = prog_info(fd)?.jited_prog_len;
    let mut image = vec![0u8; len as usize];
    // SAFETY: zero is valid for the info struct.
    let mut info: sys::bpf_prog_info = unsafe { zeroed() };
    info.jited_prog_len = len;
    info.jited_prog_insns = image.as_mut_ptr() as u64;
    let mut info_len = size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: the kernel writes at most `jited_prog_len` bytes to `image`, which has that size.
    check(unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut info_len) })?;
    // The image cannot grow between the calls (a loaded program is immutable), but the kernel
    // reports its own length: keep no more than it wrote.
    image.truncate(info.jited_prog_len.min(len) as usize);
    Ok(image)
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a map.
pub fn map_info(fd: BorrowedFd<'_>) -> Result<sys::bpf_map_info, Errno> {
    // SAFETY: as in prog_info.
    let mut info: sys::bpf_map_info = unsafe { zeroed() };
    let mut len = size_of::<sys::bpf_map_info>() as u32;
    // SAFETY: as above.
    check(unsafe { sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    Ok(info)
}

/// The parts of `BPF_OBJ_GET_INFO_BY_FD` for a link the loaders need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Link id.
    pub id: u32,
    /// `bpf_link_type`.
    pub link_type: u32,
    /// Program the link runs.
    pub prog_id: u32,
    /// Device an XDP or tcx link is attached to (0 for other types); 0 once the device is gone
    /// (the link is then defunct).
    pub ifindex: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a link, reduced to what an XDP or tcx link reports.
pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo, Errno> {
    // SAFETY: as in prog_info.
    let mut info: sys::bpf_link_info = unsafe { zeroed() };
    let mut len = size_of::<sys::bpf_link_info>() as u32;
    // SAFETY: as above.
    check(unsafe { sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    let ifindex = if info.type_ == sys::BPF_LINK_TYPE_XDP {
        // SAFETY: the union member matching the link type.
        unsafe { info.__bindgen_anon_1.xdp.ifindex }
    } else if info.type_ == sys::BPF_LINK_TYPE_TCX {
        // SAFETY: the union member matching the link type; 0 once the device is gone
        // (tcx_link_fill_info() in kernel/bpf/tcx.c).
        unsafe { info.__bindgen_anon_1.tcx.ifindex }
    } else {
        0
    };
    Ok(LinkInfo {
        id: info.id,
        link_type: info.type_,
        prog_id: info.prog_id,
        ifindex,
    })
}

/// `BPF_PROG_LOAD` of a program made of raw instructions.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    insns: &[sys::bpf_insn],
    prog_flags: u32,
) -> Result<OwnedFd, Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let license = CString::new("Apache-2.0").expect("no NUL");
    // SAFETY: zero is valid for the options struct.
    let mut opts: sys::bpf_prog_load_opts = unsafe { zeroed() };
    opts.sz = size_of::<sys::bpf_prog_load_opts>() as _;
    opts.expected_attach_type = expected_attach_type;
    opts.prog_flags = prog_flags;
    // SAFETY: valid strings and instruction buffer for the duration of the call.
    fd_from(unsafe {
        sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    })
}

/// Number of possible CPUs (the stride of per-CPU map values).
pub fn possible_cpus() -> Result<usize, Errno> {
    // SAFETY: plain libbpf call (reads /sys/devices/system/cpu/possible once).
    check(unsafe { sys::libbpf_num_possible_cpus() }).map(|n| n as usize)
}

/// `BPF_LINK_CREATE` with `BPF_TCX_INGRESS` on `ifindex`: appended after the programs already
/// there (no `BPF_F_BEFORE`), so an admin's or Cilium's earlier program keeps running first.
pub fn tcx_link_create(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: zero is a valid bit pattern for the options struct.
    let mut opts: sys::bpf_link_create_opts = unsafe { zeroed() };
    opts.sz = size_of::<sys::bpf_link_create_opts>() as _;
    // SAFETY: valid fd and options.
    fd_from(unsafe {
        sys::bpf_link_create(
            prog.as_raw_fd(),
            ifindex as i32,
            sys::BPF_TCX_INGRESS,
            &opts,
        )
    })
}

/// `BPF_PROG_ATTACH` of the egress program to the pair whose primary is `primary_ifindex`,
/// attach type `BPF_NETKIT_PEER` (netkit_dev_fetch() resolves the peer from the primary).
pub fn netkit_attach(prog: BorrowedFd<'_>, primary_ifindex: u32) -> Result<(), Errno> {
    // SAFETY: zero is valid for the options struct.
    let mut opts: sys::bpf_prog_attach_opts = unsafe { zeroed() };
    opts.sz = size_of::<sys::bpf_prog_attach_opts>() as _;
    // SAFETY: valid fd and options.
    check(unsafe {
        sys::bpf_prog_attach_opts(
            prog.as_raw_fd(),
            primary_ifindex as i32,
            sys::BPF_NETKIT_PEER,
            &opts,
        )
    })
    .map(drop)
}

/// Program ids attached to the pair of `primary_ifindex` as `BPF_NETKIT_PEER`, in run order.
pub fn netkit_peer_programs(primary_ifindex: u32) -> Result<Vec<u32>, Errno> {
    prog_query(primary_ifindex, sys::BPF_NETKIT_PEER)
}

/// Program ids attached to `ifindex`'s tcx ingress, in run order.
pub fn tcx_ingress_programs(ifindex: u32) -> Result<Vec<u32>, Errno> {
    prog_query(ifindex, sys::BPF_TCX_INGRESS)
}

/// `BPF_PROG_QUERY` of a bpf_mprog hook (tcx, netkit): the attached program ids.
fn prog_query(ifindex: u32, attach_type: u32) -> Result<Vec<u32>, Errno> {
    let mut ids = [0u32; 64];
    // SAFETY: zero is valid for the options struct.
    let mut opts: sys::bpf_prog_query_opts = unsafe { zeroed() };
    opts.sz = size_of::<sys::bpf_prog_query_opts>() as _;
    opts.prog_ids = ids.as_mut_ptr();
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: `ids` outlives the call and holds `count` entries.
    check(unsafe { sys::bpf_prog_query_opts(ifindex as i32, attach_type, &mut opts) })?;
    // SAFETY: the kernel wrote back the count (the union's other member is the same u32).
    let n = unsafe { opts.__bindgen_anon_1.count } as usize;
    Ok(ids[..n.min(ids.len())].to_vec())
}

/// Every key of a map (`BPF_MAP_GET_NEXT_KEY` walk).
pub fn map_keys<K: Copy + Default>(fd: BorrowedFd<'_>) -> Result<Vec<K>, Errno> {
    let mut keys = Vec::new();
    let mut next = K::default();
    // SAFETY: NULL starts the walk; `next` has the map's key size.
    let mut ret = unsafe {
        sys::bpf_map_get_next_key(
            fd.as_raw_fd(),
            std::ptr::null(),
            (&mut next as *mut K).cast(),
        )
    };
    while ret == 0 {
        keys.push(next);
        let cur = next;
        // SAFETY: both point to key-sized values.
        ret = unsafe {
            sys::bpf_map_get_next_key(
                fd.as_raw_fd(),
                (&cur as *const K).cast(),
                (&mut next as *mut K).cast(),
            )
        };
        if keys.len() > 1 << 20 {
            return Err(Errno::E2BIG);
        }
    }
    match Errno::from_raw(-ret) {
        Errno::ENOENT => Ok(keys),
        e => Err(e),
    }
}
