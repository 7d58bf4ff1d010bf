//! `netkit-cni qemu-netdev`: QEMU's `-netdev af-xdp,…` argument for an attachment, built from its
//! device-info file (see [`crate::plugin::devinfo`]) following QEMU's own semantics, so that a
//! launcher (KubeVirt's virt-launcher, a script) never derives queue numbers itself.
//!
//! What QEMU does with the options (qapi/net.json `NetdevAFXDPOptions`, net/af-xdp.c
//! `net_init_af_xdp`, `af_xdp_socket_create`, `af_xdp_update_xsk_map`):
//! - `queues=N` makes N net clients; client `i` binds its socket to queue `start-queue + i` of
//!   `ifname` (`queue_id = nc.queue_index + start_queue`), so the pod's virtual queues must be
//!   the contiguous range `start-queue .. start-queue + N`.
//! - Without `inhibit=on` QEMU loads libxdp's default program on `ifname` and fails unless an XDP
//!   program is attached there (`bpf_xdp_query_id`); a netkit device refuses XDP programs, and
//!   the node's dispatcher on the NIC is what steers the queues, so `inhibit=on` is always given.
//! - `inhibit=on` needs exactly one of `map-path` (QEMU ≥ 10.1: QEMU opens the pinned XSKMAP and
//!   inserts socket `i` at `map-start-index + i`) and `sock-fds` (one fd per queue, `a:b:…`).
//!   Our XSKMAP is indexed by virtual queue, hence `map-start-index = start-queue`.
//! - With `sock-fds` QEMU registers its own UMEM on each fd and binds it
//!   (`xsk_umem__create_with_fd`, then `xsk_socket__create`): the fds must be fresh, unbound
//!   `socket(AF_XDP)` sockets (creating one needs `CAP_NET_RAW`, which is why a launcher makes
//!   them), and QEMU inserts them into no map, so whoever created them puts them into
//!   `xsk-map` at `start-queue + i` (through a duplicate it kept) once QEMU has set them up; an
//!   XSKMAP takes a socket as soon as its RX ring exists (`xsk_map_update_elem`,
//!   net/xdp/xskmap.c), and frames reach it once it is bound.
//! - `force-copy=on` binds with `XDP_COPY` (drivers without AF_XDP zero-copy; netdevsim).
//!
//! Option values are QemuOpts: a `,` inside a value is written `,,`.

use std::path::{Path, PathBuf};

use crate::plugin::devinfo::DeviceInfo;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{0}")]
    Usage(String),
    #[error("device-info file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device-info file {path} is not a netkit-lease device-info file: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("device-info file {path}: {msg}")]
    Unusable { path: PathBuf, msg: String },
}

impl QemuError {
    /// 2 for a bad command line, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            QemuError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub const USAGE: &str = "\
netkit-cni qemu-netdev: print QEMU's -netdev af-xdp argument for an attachment

Usage:
  netkit-cni qemu-netdev --device-info FILE --id ID [--sock-fds FD:FD:...] [--force-copy]

  --device-info FILE  the attachment's device-info file (written by netkit-cni ADD; it needs
                      the network's `xdp` block)
  --id ID             the netdev id (QEMU: a letter, then letters, digits, '-', '.', '_')
  --sock-fds FDS      one fd per leased queue, ':'-separated: fresh unbound AF_XDP sockets
                      QEMU binds itself (any QEMU with af-xdp); without it, map-path is used:
                      QEMU inserts its sockets into the pod's XSKMAP (QEMU >= 10.1)
  --force-copy        force-copy=on (AF_XDP copy mode, for drivers without zero-copy)

Prints the value for -netdev, e.g.
  af-xdp,id=hn1,ifname=net1,queues=2,start-queue=1,inhibit=on,map-path=/sys/fs/bpf/...,map-start-index=1
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub device_info: PathBuf,
    pub id: String,
    pub sock_fds: Option<Vec<String>>,
    pub force_copy: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Run(Options),
}

pub fn parse_args(args: &[String]) -> Result<Invocation, QemuError> {
    use crate::cli_args::{parse, Opt};
    const OPTS: &[Opt] = &[
        Opt::value("--device-info", "a value"),
        Opt::value("--id", "a value"),
        Opt::value("--sock-fds", "a value"),
        Opt::flag("--force-copy"),
    ];
    let p = parse(args, OPTS).map_err(|e| QemuError::Usage(e.to_string()))?;
    if p.help {
        return Ok(Invocation::Help);
    }
    let device_info = p.get("--device-info").map(PathBuf::from);
    let id = p.get("--id").map(str::to_string);
    let sock_fds = p.get("--sock-fds").map(parse_sock_fds).transpose()?;
    let force_copy = p.has("--force-copy");
    let device_info =
        device_info.ok_or_else(|| QemuError::Usage("--device-info is required".into()))?;
    let id = id.ok_or_else(|| QemuError::Usage("--id is required".into()))?;
    if !id_wellformed(&id) {
        return Err(QemuError::Usage(format!(
            "--id {id:?}: QEMU wants a letter, then letters, digits, '-', '.' or '_'"
        )));
    }
    Ok(Invocation::Run(Options {
        device_info,
        id,
        sock_fds,
        force_copy,
    }))
}

/// QEMU's `id_wellformed` (util/id.c).
fn id_wellformed(id: &str) -> bool {
    let mut c = id.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
}

/// `3:4` → ["3", "4"]. QEMU resolves each through `monitor_fd_param`, which on a command line
/// (no monitor) only accepts a decimal fd number.
fn parse_sock_fds(s: &str) -> Result<Vec<String>, QemuError> {
    s.split(':')
        .map(|f| match f.parse::<u32>() {
            Ok(n) if i32::try_from(n).is_ok() => Ok(n.to_string()),
            _ => Err(QemuError::Usage(format!(
                "--sock-fds {s:?}: {f:?} is not a file descriptor number"
            ))),
        })
        .collect()
}

/// A QemuOpts value: `,` doubled.
fn qemu_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// The `-netdev` value for `info` (read from `path`, named in errors).
pub fn netdev_arg(info: &DeviceInfo, path: &Path, opts: &Options) -> Result<String, QemuError> {
    let unusable = |msg: String| QemuError::Unusable {
        path: path.to_path_buf(),
        msg,
    };
    let l = &info.lease;
    let x = l.xdp.as_ref().ok_or_else(|| unusable("it has no `xdp` section: the network has no `xdp` block, so nothing steers the leased queues to AF_XDP sockets".into()))?;
    if x.queue_count == 0 {
        return Err(unusable("xdp.queue-count is 0".into()));
    }
    // The plugin never leases more (the pod cap's ceiling); checked before anything is sized
    // from it.
    if x.queue_count > MAX_QUEUES {
        return Err(unusable(format!(
            "xdp.queue-count {} is above {MAX_QUEUES}",
            x.queue_count
        )));
    }
    let end = x.start_queue.checked_add(x.queue_count).ok_or_else(|| {
        unusable(format!(
            "xdp.start-queue {} + xdp.queue-count {} overflows",
            x.start_queue, x.queue_count
        ))
    })?;
    // QEMU binds socket i to start-queue + i: the virtual queues must be exactly that range.
    let mut vq: Vec<u32> = l.queues.iter().map(|q| q.virtual_id).collect();
    vq.sort_unstable();
    if !vq.iter().copied().eq(x.start_queue..end) {
        return Err(unusable(format!(
            "the virtual queues {:?} are not start-queue {} .. {} (QEMU binds socket i to start-queue + i)",
            crate::logging::clip(&format!("{vq:?}"), 64),
            x.start_queue,
            end - 1
        )));
    }
    if x.map_start_index != x.start_queue {
        return Err(unusable(format!(
            "xdp.map-start-index {} is not xdp.start-queue {} (the XSKMAP is indexed by virtual queue)",
            x.map_start_index, x.start_queue
        )));
    }
    // Both are printed into QEMU's command line: they must be what the plugin writes for this
    // record, not whatever the file says (a newline would start another argument for a shell
    // reading the output).
    crate::kernel::link::validate_ifname(&l.interface).map_err(|e| {
        unusable(format!(
            "interface {}: {e}",
            crate::logging::escaped(&crate::logging::clip(&l.interface, 64))
        ))
    })?;
    if !xsk_map_wellformed(&x.xsk_map, l) {
        return Err(unusable(format!(
            "xdp.xsk-map {} is not <bpffs>/netkit-cni/netns<cookie>-if{}/pods/{}/{}/xsks",
            crate::logging::escaped(&crate::logging::clip(&x.xsk_map, 128)),
            l.master.ifindex,
            crate::logging::escaped(&crate::logging::clip(&l.container_id, 64)),
            l.interface
        )));
    }
    let mut a = format!(
        "af-xdp,id={},ifname={},queues={},start-queue={},inhibit=on",
        opts.id,
        qemu_value(&l.interface),
        x.queue_count,
        x.start_queue
    );
    match &opts.sock_fds {
        Some(fds) => {
            if fds.len() != x.queue_count as usize {
                return Err(QemuError::Usage(format!(
                    "--sock-fds has {} fds, the attachment has {} queues (QEMU: \"expected {} socket fds\")",
                    fds.len(),
                    x.queue_count,
                    x.queue_count
                )));
            }
            a.push_str(&format!(",sock-fds={}", fds.join(":")));
        }
        None => a.push_str(&format!(
            ",map-path={},map-start-index={}",
            qemu_value(&x.xsk_map),
            x.map_start_index
        )),
    }
    if opts.force_copy {
        a.push_str(",force-copy=on");
    }
    Ok(a)
}

/// The most queues a record may name: the plugin's own ceiling on a pod's leases
/// (`maxQueuesPerPod`'s default cap).
pub const MAX_QUEUES: u32 = 1023;

/// Whether `p` is the XSKMAP pin the plugin names for the record `l`:
/// `<bpffs>/netkit-cni/netns<cookie>-if<master ifindex>/pods/<container id>/<interface>/xsks`,
/// absolute, with no `.`/`..` component and no control or format character (the bpffs mount
/// point is the admin's and not known here).
fn xsk_map_wellformed(p: &str, l: &crate::plugin::devinfo::LeaseInfo) -> bool {
    if !p.starts_with('/') || p.chars().any(crate::logging::is_unsafe_char) {
        return false;
    }
    let parts: Vec<&str> = p.split('/').skip(1).collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
        || parts.len() < 6
    {
        return false;
    }
    let tail = &parts[parts.len() - 6..];
    let nic = tail[1]
        .strip_prefix("netns")
        .and_then(|r| r.split_once("-if"))
        .is_some_and(|(cookie, ifx)| {
            cookie.parse::<u64>().is_ok() && ifx.parse::<u32>().ok() == Some(l.master.ifindex)
        });
    tail[0] == "netkit-cni"
        && nic
        && tail[2] == "pods"
        && tail[3] == l.container_id
        && tail[4] == l.interface
        && tail[5] == "xsks"
}

/// Reads the file the way the plugin reads device-info records ([`crate::safefs`]): its last
/// component is opened `O_NOFOLLOW | O_NONBLOCK`, must be a regular file and is read up to
/// [`READ_LIMIT`](crate::plugin::devinfo::READ_LIMIT) bytes (a symlink to `/etc/shadow`, a FIFO
/// or `/dev/zero` is an error, not a parse, a hang or an OOM); then builds the argument.
pub fn run(opts: &Options) -> Result<String, QemuError> {
    let path = &opts.device_info;
    let read_err = |source: std::io::Error| QemuError::Read {
        path: path.clone(),
        source,
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(read_err(std::io::Error::other("not a file path")));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let safe = |e: crate::safefs::SafeFsError| read_err(std::io::Error::other(e.to_string()));
    let dir = crate::safefs::Dir::open_trusted(parent, crate::safefs::Owner::Any).map_err(safe)?;
    let body = dir
        .read_file(name, crate::plugin::devinfo::READ_LIMIT)
        .map_err(safe)?
        .ok_or_else(|| read_err(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let info: DeviceInfo = serde_json::from_slice(&body).map_err(|source| QemuError::Decode {
        path: path.clone(),
        source,
    })?;
    netdev_arg(&info, path, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::devinfo::{LeaseInfo, MasterInfo, QueueMap, XdpInfo};

    fn info(vqueues: &[u32], xdp: bool) -> DeviceInfo {
        let start = vqueues.iter().copied().min().unwrap_or(0);
        DeviceInfo::new(LeaseInfo {
            network: "net".into(),
            container_id: "c1".into(),
            interface: "net1".into(),
            pairing: "single".into(),
            ifindex: 2,
            sandbox: "/run/netns/pod".into(),
            master: MasterInfo {
                name: "ens1f0".into(),
                ifindex: 4,
            },
            queues: vqueues
                .iter()
                .enumerate()
                .map(|(i, &v)| QueueMap {
                    physical: 10 + i as u32,
                    virtual_id: v,
                })
                .collect(),
            xdp: xdp.then(|| XdpInfo {
                xsk_map: "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net1/xsks".into(),
                start_queue: start,
                queue_count: vqueues.len() as u32,
                map_start_index: start,
                dpdk_ports: String::new(),
            }),
            consumer: None,
            steering: None,
        })
    }

    fn opts(extra: &[&str]) -> Result<Invocation, QemuError> {
        // `--id hn1` unless the test gives its own: an option given twice is an error.
        let base: &[&str] = if extra.contains(&"--id") {
            &["--device-info", "/x.json"]
        } else {
            &["--device-info", "/x.json", "--id", "hn1"]
        };
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        parse_args(&a)
    }

    fn run_opts(extra: &[&str]) -> Options {
        match opts(extra).unwrap() {
            Invocation::Run(o) => o,
            Invocation::Help => panic!("help"),
        }
    }

    fn arg(i: &DeviceInfo, extra: &[&str]) -> Result<String, QemuError> {
        netdev_arg(i, Path::new("/x.json"), &run_opts(extra))
    }

    #[test]
    fn map_path_mode_names_every_option_from_the_file() {
        let a = arg(&info(&[1, 2], true), &[]).unwrap();
        assert_eq!(a, "af-xdp,id=hn1,ifname=net1,queues=2,start-queue=1,inhibit=on,map-path=/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net1/xsks,map-start-index=1");
    }

    #[test]
    fn queues_and_start_queue_follow_the_virtual_range() {
        let a = arg(&info(&[3, 4, 5], true), &[]).unwrap();
        assert!(a.contains(",queues=3,start-queue=3,"), "{a}");
        // Socket i goes to map-start-index + i, which must be its bound queue start-queue + i.
        assert!(a.ends_with(",map-start-index=3"), "{a}");
    }

    #[test]
    fn inhibit_is_always_on() {
        for extra in [&[][..], &["--sock-fds", "7"][..]] {
            let a = arg(&info(&[1], true), extra).unwrap();
            assert!(a.contains(",inhibit=on"), "{a}");
        }
    }

    #[test]
    fn sock_fds_replace_map_path_and_must_match_the_queue_count() {
        let a = arg(&info(&[1, 2], true), &["--sock-fds", "17:18"]).unwrap();
        assert_eq!(
            a,
            "af-xdp,id=hn1,ifname=net1,queues=2,start-queue=1,inhibit=on,sock-fds=17:18"
        );
        assert!(
            !a.contains("map-path") && !a.contains("map-start-index"),
            "QEMU: mutually exclusive, and map-start-index needs map-path"
        );
        let e = arg(&info(&[1, 2], true), &["--sock-fds", "17"]).unwrap_err();
        assert!(
            e.to_string().contains("1 fds") && e.to_string().contains("2 queues"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn sock_fds_must_be_numbers() {
        for bad in ["", "a", "3:", "3::4", "-1", "4294967296", "2147483648"] {
            let e = opts(&["--sock-fds", bad]).unwrap_err();
            assert!(e.to_string().contains("--sock-fds"), "{bad:?}: {e}");
        }
        assert_eq!(
            run_opts(&["--sock-fds", "0:2147483647"]).sock_fds.unwrap(),
            vec!["0", "2147483647"]
        );
    }

    #[test]
    fn force_copy_is_opt_in() {
        assert!(!arg(&info(&[1], true), &[]).unwrap().contains("force-copy"));
        assert!(arg(&info(&[1], true), &["--force-copy"])
            .unwrap()
            .ends_with(",force-copy=on"));
    }

    #[test]
    fn commas_in_values_are_doubled() {
        let mut i = info(&[1], true);
        i.lease.interface = "a,b".into();
        i.lease.xdp.as_mut().unwrap().xsk_map =
            "/sys/fs/bpf/x,y/netkit-cni/netns1-if4/pods/c1/a,b/xsks".into();
        let a = arg(&i, &[]).unwrap();
        assert!(
            a.contains(",ifname=a,,b,")
                && a.contains(
                    ",map-path=/sys/fs/bpf/x,,y/netkit-cni/netns1-if4/pods/c1/a,,b/xsks,"
                ),
            "{a}"
        );
    }

    #[test]
    fn ids_follow_qemus_rule() {
        for good in ["hn1", "a", "net-1.x_y"] {
            assert!(
                matches!(opts(&["--id", good]), Ok(Invocation::Run(o)) if o.id == good),
                "{good}"
            );
        }
        for bad in ["", "1net", "-a", "a,b", "a b", "é"] {
            let e = opts(&["--id", bad]).unwrap_err();
            assert!(e.to_string().contains("--id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_file_without_xdp_or_with_a_gap_is_refused() {
        let e = arg(&info(&[1], false), &[]).unwrap_err();
        assert!(
            e.to_string().contains("no `xdp` section") && e.to_string().contains("/x.json"),
            "{e}"
        );
        let mut gap = info(&[1, 3], true);
        gap.lease.xdp.as_mut().unwrap().queue_count = 2;
        let e = arg(&gap, &[]).unwrap_err();
        assert!(e.to_string().contains("[1, 3]"), "{e}");
    }

    #[test]
    fn hostile_numbers_are_refused_before_anything_is_sized_from_them() {
        // 4294967295 queues: a 17 GB Vec before; refused by the cap now.
        let mut huge = info(&[1], true);
        huge.lease.xdp.as_mut().unwrap().queue_count = u32::MAX;
        let e = arg(&huge, &[]).unwrap_err();
        assert!(e.to_string().contains("above 1023"), "{e}");
        let mut over = info(&[1], true);
        over.lease.xdp.as_mut().unwrap().queue_count = 1024;
        assert!(arg(&over, &[]).is_err());
        // start-queue + queue-count wrapped silently to an empty range before.
        let mut wrap = info(&[1], true);
        let x = wrap.lease.xdp.as_mut().unwrap();
        x.start_queue = u32::MAX;
        x.map_start_index = u32::MAX;
        let e = arg(&wrap, &[]).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let mut idx = info(&[1], true);
        idx.lease.xdp.as_mut().unwrap().map_start_index = 7;
        assert!(arg(&idx, &[])
            .unwrap_err()
            .to_string()
            .contains("map-start-index 7"));
    }

    #[test]
    fn interface_and_map_path_must_be_the_records_own() {
        for bad in [
            "net1\n-netdev x",
            "net1\u{1b}[2J",
            "a/b",
            "",
            "sixteen-bytes-xx",
        ] {
            let mut i = info(&[1], true);
            i.lease.interface = bad.into();
            let e = arg(&i, &[]).unwrap_err();
            assert!(e.to_string().contains("interface"), "{bad:?}: {e}");
            assert!(
                !e.to_string().contains('\n') && !e.to_string().contains('\u{1b}'),
                "{e:?}"
            );
        }
        for bad in [
            "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net1/xsks\n-netdev x",
            "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c2/net1/xsks",
            "/sys/fs/bpf/netkit-cni/netns1-if5/pods/c1/net1/xsks",
            "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net2/xsks",
            "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net1/../../../../../../etc/xsks",
            "/sys/fs/bpf/netkit-cni/../netkit-cni/netns1-if4/pods/c1/net1/xsks",
            "sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/net1/xsks",
            "/etc/shadow",
            "/x/netkit-cni/netnsX-if4/pods/c1/net1/xsks",
        ] {
            let mut i = info(&[1], true);
            i.lease.xdp.as_mut().unwrap().xsk_map = bad.into();
            let e = arg(&i, &[]).unwrap_err();
            assert!(e.to_string().contains("xsk-map"), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e:?}");
        }
        let mut other = info(&[1], true);
        other.lease.xdp.as_mut().unwrap().xsk_map =
            "/run/bpf/netkit-cni/netns77-if4/pods/c1/net1/xsks".into();
        assert!(arg(&other, &[]).is_ok(), "any bpffs mount point");
    }

    #[test]
    fn run_reads_like_the_plugin_no_symlink_fifo_or_device() {
        let dir = std::env::temp_dir().join(format!("nkc-qemu-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = |name: &str| Options {
            device_info: dir.join(name),
            id: "hn1".into(),
            sock_fds: None,
            force_copy: false,
        };
        let secret = dir.join("secret");
        std::fs::write(&secret, serde_json::to_vec(&info(&[1], true)).unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("link.json")).unwrap();
        let e = run(&o("link.json")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        nix::unistd::mkfifo(
            &dir.join("fifo.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = o("fifo.json");
        std::thread::spawn(move || {
            let _ = tx.send(run(&fifo).map_err(|e| e.to_string()));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("a FIFO must not hang qemu-netdev")
            .unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        let zero = Options {
            device_info: "/dev/zero".into(),
            ..o("x")
        };
        let e = run(&zero).unwrap_err();
        assert!(e.to_string().contains("device node"), "{e}");
        std::fs::write(dir.join("big.json"), vec![b' '; (2 << 20) + 1]).unwrap();
        let e = run(&o("big.json")).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn required_and_unknown_arguments() {
        let e = parse_args(&["--id".into(), "hn1".into()]).unwrap_err();
        assert!(e.to_string().contains("--device-info is required"), "{e}");
        let e = parse_args(&["--device-info".into(), "/x".into()]).unwrap_err();
        assert!(e.to_string().contains("--id is required"), "{e}");
        let e = opts(&["--map-path", "/x"]).unwrap_err();
        assert!(
            e.to_string().contains("unknown argument \"--map-path\""),
            "{e}"
        );
        let e = parse_args(&["--device-info".into()]).unwrap_err();
        assert!(e.to_string().contains("--device-info needs a value"), "{e}");
        assert_eq!(parse_args(&["--help".into()]).unwrap(), Invocation::Help);
    }

    #[test]
    fn run_reads_the_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("nkc-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("net:c1:net1-device.json");
        std::fs::write(&f, serde_json::to_vec(&info(&[1, 2], true)).unwrap()).unwrap();
        let o = Options {
            device_info: f.clone(),
            id: "hn1".into(),
            sock_fds: None,
            force_copy: false,
        };
        assert!(run(&o)
            .unwrap()
            .starts_with("af-xdp,id=hn1,ifname=net1,queues=2,"));
        std::fs::write(&f, b"{\"type\": \"pci\"}").unwrap();
        let e = run(&o).unwrap_err();
        assert!(
            matches!(e, QemuError::Decode { .. }) && e.to_string().contains(f.to_str().unwrap()),
            "{e}"
        );
        let missing = Options {
            device_info: dir.join("none.json"),
            ..o
        };
        assert!(matches!(run(&missing), Err(QemuError::Read { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
