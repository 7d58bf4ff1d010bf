//! The lease mapping of an attachment as a device-info file, following the Network Plumbing
//! Working Group's Device Information Specification 1.1.0 (k8snetworkplumbingwg/device-info-spec):
//! a JSON map with `type`, `version` and a section named after the type. The spec's own types
//! (pci, vdpa, vhost-user, memif) do not describe a leased queue, so this uses its own type,
//! `netkit-lease`, with a section of the same name:
//!
//! ```json
//! {
//!   "type": "netkit-lease",
//!   "version": "1.1.0",
//!   "netkit-lease": {
//!     "network": "podnet", "container-id": "c1", "interface": "eth0", "pairing": "single",
//!     "ifindex": 2, "sandbox": "/run/netns/pod",
//!     "master": {"name": "ens1f0", "ifindex": 4},
//!     "queues": [{"physical": 1, "virtual": 1}, {"physical": 2, "virtual": 2}],
//!     "consumer": "af-xdp",
//!     "xdp": {"xsk-map": "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/eth0/xsks",
//!             "start-queue": 1, "queue-count": 2, "map-start-index": 1,
//!             "dpdk-ports": "one single-queue port per leased queue: ..."}
//!   }
//! }
//! ```
//!
//! `xdp` is present when the network steers leased queues to AF_XDP sockets (the `xdp` block):
//! an AF_XDP socket bound to virtual queue `v` of the pod device goes into the pinned XSKMAP at
//! index `v`. The names follow QEMU's `-netdev af-xdp` options (`start-queue`, `queues`,
//! `map-path`, `map-start-index`), so a launcher can pass them through unchanged.
//!
//! `ifindex` is the pod device's index inside the sandbox, `master.ifindex` the NIC's in the
//! node netns; each queue pairs a physical RX queue of the master with the RX queue it became on
//! the pod device. Files live in a configurable directory (default: the spec's directory for
//! files written by CNI plugins, `/var/run/k8s.cni.cncf.io/devinfo/cni`), one per attachment,
//! named only from the validated network name, container id and ifname — never from anything
//! else a caller sends — so no input can steer a write outside that directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernel::link::Marker;
use crate::safefs::{utf8_name, Dir, Kind, Owner, SafeFsError};

/// Largest device-info file CHECK reads: ours are a few hundred bytes; anything near this is
/// not one (a planted `/dev/zero` would otherwise be read until memory runs out).
pub const READ_LIMIT: u64 = 1 << 20;

/// The spec version these files follow.
pub const SPEC_VERSION: &str = "1.1.0";
/// Our device type (and the name of its section).
pub const DEVICE_TYPE: &str = "netkit-lease";
const SUFFIX: &str = "-device.json";
/// Cannot occur in a network name or container id (`[a-zA-Z0-9_.-]`) nor in an ifname, so the
/// file name maps back to exactly one attachment.
const SEP: char = ':';

#[derive(Debug, thiserror::Error)]
pub enum DevInfoError {
    #[error("device-info file {path} is not valid: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The directory or the file is not what the plugin writes (a symlink, a FIFO, a device, too
    /// large), or a syscall on it failed; see [`crate::safefs`].
    #[error("device-info: {0}")]
    Fs(#[from] SafeFsError),
}

/// Mode of a device-info directory the plugin creates: 0755 plus the sticky bit, so that
/// whoever the administrator later lets write it (a device plugin, a pod's uid) can unlink or
/// rename only their own files, never the plugin's root-owned records (fs/namei.c
/// `check_sticky`: only the file's or the directory's owner, or CAP_FOWNER in the init user
/// namespace). A directory that already exists keeps the administrator's mode.
pub const DIR_MODE: u32 = 0o1755;

/// The device-info directory: the administrator's path, whose last component is opened without
/// following a symlink (created [`DIR_MODE`] when `create`). `None` if it does not exist.
fn open_dir(dir: &Path, create: bool) -> Result<Option<Dir>, DevInfoError> {
    Ok(Dir::open_last_untrusted(dir, create, DIR_MODE, Owner::Any)?)
}

fn file_name(marker: &Marker) -> String {
    format!(
        "{}{SEP}{}{SEP}{}{SUFFIX}",
        marker.network(),
        marker.container_id(),
        marker.ifname()
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    #[serde(rename = "netkit-lease")]
    pub lease: LeaseInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LeaseInfo {
    pub network: String,
    pub container_id: String,
    pub interface: String,
    /// "pair" or "single".
    pub pairing: String,
    pub ifindex: u32,
    pub sandbox: String,
    pub master: MasterInfo,
    pub queues: Vec<QueueMap>,
    /// Absent when the network has no `xdp` block (and in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpInfo>,
    /// What the leased queues are for: `"af-xdp"` or `"memory-provider"` (the network's
    /// `lease.consumer`, AF_XDP by default with an `xdp` block). Absent when the network
    /// declares none (and in files written before it existed). A root-owned record that
    /// [`LeaseInfo::describes`] a live lessee is what the XDP dispatcher's attach refusal trusts
    /// (see the threat model, docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// How the NIC steers this attachment's frames to its queues (`lease.steering`): the
    /// rules and context the plugin made, for DEL, CHECK, GC and inspect, and the pool and rule
    /// base every other network steering on the NIC must agree with. Absent in files written
    /// before steering existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringInfo>,
}

/// The `steering` section of a record (see docs/steering.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SteeringInfo {
    /// `lease.steering.rss`: "admin" or "exclude-pool".
    pub rss: String,
    /// `lease.steering.match`: "none", "mac" or "ip".
    #[serde(rename = "match")]
    pub match_on: String,
    /// The pool on the NIC, as a queue set ("2-7").
    pub pool: String,
    /// `lease.steering.ruleBase`.
    pub rule_base: u32,
    /// The ntuple rules made for the attachment, by location.
    #[serde(default)]
    pub rules: Vec<RuleInfo>,
    /// The RSS context the rules point at (several leased queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<u32>,
    /// The MAC added to the NIC's unicast filter (`match: mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast: Option<String>,
}

/// One ntuple rule: its location and what it does, as `ethtool -n` would say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub location: u32,
    /// "ether dst 02:…:07 -> queue 3", "ip4 dst 10.1.0.5 -> context 1".
    pub rule: String,
}

/// Where the pod's AF_XDP sockets go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct XdpInfo {
    /// bpffs pin of the attachment's XSKMAP (QEMU `map-path`).
    pub xsk_map: String,
    /// Lowest virtual queue id fed by a leased queue (QEMU `start-queue`).
    pub start_queue: u32,
    /// Virtual queues fed, `start-queue` upwards (QEMU `queues`).
    pub queue_count: u32,
    /// XSKMAP index of the socket on `start-queue` (QEMU `map-start-index`): the map is indexed
    /// by virtual queue id, so this equals `start-queue`.
    pub map_start_index: u32,
    /// For a DPDK application: how many queues one AF_XDP PMD port may take, [`DPDK_PORTS`].
    #[serde(default)]
    pub dpdk_ports: String,
}

/// `xdp.dpdk-ports`: DPDK's AF_XDP PMD asks the interface for its channels (`ETHTOOL_GCHANNELS`,
/// `xdp_get_channels_info` in drivers/net/af_xdp/rte_eth_af_xdp.c) and refuses a `queue_count`
/// above the combined count; netkit implements no `get_channels` (drivers/net/netkit.c has only
/// `get_drvinfo`), so the PMD sees one channel. `start_queue` is not checked, so one port per
/// leased queue works (tests/vm_dpdk.rs runs both shapes).
pub const DPDK_PORTS: &str = "one single-queue port per leased queue: queue_count=1, start_queue=each of start-queue..start-queue+queue-count-1 (netkit reports no channels, ETHTOOL_GCHANNELS)";

impl XdpInfo {
    pub fn from_handoff(h: &crate::xdp::PodHandoff) -> XdpInfo {
        let v = h.vqueues();
        let start = v.first().copied().unwrap_or(0);
        XdpInfo {
            xsk_map: h.xskmap_pin.display().to_string(),
            start_queue: start,
            queue_count: v.len() as u32,
            map_start_index: start,
            dpdk_ports: DPDK_PORTS.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMap {
    pub physical: u32,
    #[serde(rename = "virtual")]
    pub virtual_id: u32,
}

impl DeviceInfo {
    pub fn new(lease: LeaseInfo) -> DeviceInfo {
        DeviceInfo {
            kind: DEVICE_TYPE.into(),
            version: SPEC_VERSION.into(),
            lease,
        }
    }
}

/// `<dir>/<network>:<container id>:<ifname>-device.json`.
pub fn path_for(dir: &Path, marker: &Marker) -> PathBuf {
    dir.join(file_name(marker))
}

/// The attachment a file name belongs to; `None` for files that are not ours.
fn marker_of(file_name: &str) -> Option<Marker> {
    let stem = file_name.strip_suffix(SUFFIX)?;
    let mut parts = stem.splitn(3, SEP);
    let (network, cid, ifname) = (parts.next()?, parts.next()?, parts.next()?);
    // Marker::new re-validates every part, so a stray file can never name something odd.
    Marker::new(network, cid, ifname).ok()
}

/// Writes the file atomically (temporary file, then rename), creating the directory if needed,
/// as the spec asks of CNI plugins. Readers never see a half-written file. The directory is
/// opened `O_DIRECTORY | O_NOFOLLOW`; the temporary file has an unpredictable short name and is
/// created `O_CREAT | O_EXCL | O_NOFOLLOW` (see [`Dir::write_file_atomic`]), so an entry planted
/// there is never written through.
pub fn write(dir: &Path, marker: &Marker, info: &DeviceInfo) -> Result<PathBuf, DevInfoError> {
    let d = open_dir(dir, true)?.expect("created");
    let mut body = serde_json::to_vec_pretty(info).expect("a DeviceInfo always serializes");
    body.push(b'\n');
    let name = file_name(marker);
    d.write_file_atomic(&name, &body, 0o644)?;
    Ok(d.join(&name))
}

/// The attachment's file, `None` if there is none. Read `O_NOFOLLOW | O_NONBLOCK`, a regular
/// file of at most [`READ_LIMIT`] bytes, owned by the plugin's uid (as [`records`] requires for
/// DEL, GC and inspect): a file someone else wrote at the name is an error, never the record.
pub fn read(dir: &Path, marker: &Marker) -> Result<Option<DeviceInfo>, DevInfoError> {
    let Some(d) = open_dir(dir, false)? else {
        return Ok(None);
    };
    let d = d.with_owner(Owner::Us);
    let name = file_name(marker);
    let Some(body) = d.read_file(&name, READ_LIMIT)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| DevInfoError::Decode {
            path: d.join(&name),
            source,
        })
}

/// Removes the attachment's file; `false` if there was none (a symlink there is removed itself,
/// never its target).
pub fn remove(dir: &Path, marker: &Marker) -> Result<bool, DevInfoError> {
    let Some(d) = open_dir(dir, false)? else {
        return Ok(false);
    };
    Ok(d.unlink(&file_name(marker))?)
}

/// The attachments of `network` that have a file in `dir` (none if `dir` does not exist).
pub fn list(dir: &Path, network: &str) -> Result<Vec<Marker>, DevInfoError> {
    let Some(d) = open_dir(dir, false)? else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for entry in d.entries()? {
        if entry.kind == Kind::Dir {
            continue;
        }
        if let Some(m) = utf8_name(&entry.name).and_then(marker_of) {
            if m.network() == network {
                out.push(m);
            }
        }
    }
    out.sort_by_key(|m| m.to_string());
    Ok(out)
}

/// One record with the attachment it belongs to.
pub type Record = (Marker, LeaseInfo);
/// The records found, and a description of each file left out.
pub type RecordScan = (Vec<Record>, Vec<String>);

/// Every device-info record in `dir` (any network) that the plugin's uid owns and whose content
/// names the same attachment as its file name, with its attachment. Files that cannot be read or decoded, or whose content
/// disagrees with their name, are left out and described in the second list: a stale or foreign
/// file must not stop DEL or GC, it only means the device it would describe stays unverified.
pub fn records(dir: &Path) -> Result<RecordScan, DevInfoError> {
    let Some(d) = open_dir(dir, false)? else {
        return Ok((vec![], vec![]));
    };
    // Only files the plugin's uid owns count: the directory may be handed to a device plugin or
    // a pod running as another uid, which must not be able to vouch for a device.
    let d = d.with_owner(Owner::Us);
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for entry in d.entries()? {
        if entry.kind == Kind::Dir {
            continue;
        }
        let Some((name, m)) =
            utf8_name(&entry.name).and_then(|n| Some((n.to_string(), marker_of(n)?)))
        else {
            continue;
        };
        let body = match d.read_file(&name, READ_LIMIT) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                skipped.push(e.to_string());
                continue;
            }
        };
        match serde_json::from_slice::<DeviceInfo>(&body) {
            Ok(info)
                if info.kind == DEVICE_TYPE
                    && info.lease.network == m.network()
                    && info.lease.container_id == m.container_id()
                    && info.lease.interface == m.ifname() =>
            {
                out.push((m, info.lease))
            }
            Ok(_) => skipped.push(format!(
                "{}: its content names another attachment than its file name",
                d.join(&name).display()
            )),
            Err(e) => skipped.push(format!("{}: {e}", d.join(&name).display())),
        }
    }
    out.sort_by_key(|(m, _)| m.to_string());
    Ok((out, skipped))
}

impl LeaseInfo {
    /// Whether this record describes the lessee `ifindex` on master `master_ifindex` holding
    /// exactly `queues` ((physical, virtual), ascending physical). These are facts the pod
    /// cannot change: the record is written by the plugin into a directory pods cannot write,
    /// and the leases are the master's, reported by the kernel in the node netns (a lease ends
    /// only with its device, so a live lessee holds every queue its ADD recorded).
    pub fn describes(&self, master_ifindex: u32, ifindex: u32, queues: &[(u32, u32)]) -> bool {
        let mut mine: Vec<(u32, u32)> = self
            .queues
            .iter()
            .map(|q| (q.physical, q.virtual_id))
            .collect();
        mine.sort_unstable();
        !mine.is_empty()
            && self.master.ifindex == master_ifindex
            && self.ifindex == ifindex
            && mine == queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let mut r = [0u8; 6];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut r)
                .unwrap();
            let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
            TempDir(std::env::temp_dir().join(format!("nkc-devinfo-{hex}")))
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn info(m: &Marker) -> DeviceInfo {
        DeviceInfo::new(LeaseInfo {
            network: m.network().into(),
            container_id: m.container_id().into(),
            interface: m.ifname().into(),
            pairing: "single".into(),
            ifindex: 2,
            sandbox: "/run/netns/p".into(),
            master: MasterInfo {
                name: "ens1f0".into(),
                ifindex: 4,
            },
            queues: vec![
                QueueMap {
                    physical: 3,
                    virtual_id: 1,
                },
                QueueMap {
                    physical: 5,
                    virtual_id: 2,
                },
            ],
            xdp: None,
            consumer: None,
            steering: None,
        })
    }

    #[test]
    fn file_follows_the_npwg_format() {
        let m = Marker::new("net-a", "c1", "eth0").unwrap();
        let v = serde_json::to_value(info(&m)).unwrap();
        assert_eq!(v["type"], "netkit-lease");
        assert_eq!(v["version"], "1.1.0");
        let s = &v["netkit-lease"];
        assert_eq!(s["container-id"], "c1");
        assert_eq!(s["master"]["name"], "ens1f0");
        assert_eq!(
            s["queues"][1],
            serde_json::json!({"physical": 5, "virtual": 2})
        );
    }

    #[test]
    fn write_read_list_remove_round_trip() {
        let dir = TempDir::new();
        let sub = dir.0.join("devinfo/cni");
        let a = Marker::new("net-a", "c1", "eth0").unwrap();
        let b = Marker::new("net", "a-c1", "eth0").unwrap(); // same text joined with '-'
        let other = Marker::new("net-b", "c9", "net1").unwrap();
        assert_eq!(
            list(&sub, "net-a").unwrap(),
            vec![],
            "a missing directory lists nothing"
        );
        let p = write(&sub, &a, &info(&a)).unwrap();
        assert_eq!(p, sub.join("net-a:c1:eth0-device.json"));
        write(&sub, &b, &info(&b)).unwrap();
        write(&sub, &other, &info(&other)).unwrap();
        std::fs::write(sub.join("unrelated.json"), b"{}").unwrap();
        assert_eq!(read(&sub, &a).unwrap(), Some(info(&a)));
        assert_eq!(list(&sub, "net-a").unwrap(), vec![a.clone()]);
        assert_eq!(list(&sub, "net").unwrap(), vec![b.clone()]);
        assert!(remove(&sub, &a).unwrap());
        assert!(!remove(&sub, &a).unwrap(), "second remove finds nothing");
        assert_eq!(read(&sub, &a).unwrap(), None);
        let leftovers: Vec<String> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !leftovers.iter().any(|n| n.ends_with(".tmp")),
            "{leftovers:?}"
        );
    }

    #[test]
    fn check_reads_only_a_record_the_plugin_owns() {
        let dir = TempDir::new();
        let a = Marker::new("net", "c1", "eth0").unwrap();
        let p = write(&dir.0, &a, &info(&a)).unwrap();
        assert_eq!(read(&dir.0, &a).unwrap(), Some(info(&a)));
        // Someone else's file at the name (a writer of the directory replaced the record).
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
        let e = read(&dir.0, &a).unwrap_err();
        assert!(e.to_string().contains("owned by uid 1000"), "{e}");
    }

    /// Who may remove whose record: in the directory the plugin creates (sticky), a writer with
    /// another uid removes only its own files; in a directory without the sticky bit (one the
    /// administrator created so), it removes or renames any record: the limit the threat model
    /// states.
    #[test]
    fn a_created_directory_is_sticky_and_only_there_records_are_safe_from_other_writers() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test switches to uid 1000 and must run as root (the plugin's own uid)"
        );
        let dir = TempDir::new();
        let sticky = dir.0.join("sticky");
        let a = Marker::new("net", "c1", "eth0").unwrap();
        write(&sticky, &a, &info(&a)).unwrap();
        let mode = std::fs::metadata(&sticky).unwrap().permissions().mode();
        assert_eq!(mode & 0o1000, 0o1000, "created sticky: {mode:o}");
        // The administrator hands it to a device plugin running as uid 1000 (keeping the bit).
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let as_uid = |args: &[&str]| {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .uid(1000)
                .gid(1000)
                .output()
                .unwrap()
        };
        let rec = path_for(&sticky, &a);
        let own = sticky.join("net:c9:eth0-device.json");
        assert!(as_uid(&["touch", own.to_str().unwrap()]).status.success());
        let rm = as_uid(&["rm", "-f", rec.to_str().unwrap()]);
        assert!(!rm.status.success(), "uid 1000 removed root's record");
        let mv = as_uid(&["mv", rec.to_str().unwrap(), own.to_str().unwrap()]);
        assert!(!mv.status.success(), "uid 1000 renamed root's record");
        assert_eq!(read(&sticky, &a).unwrap(), Some(info(&a)));
        assert!(as_uid(&["rm", "-f", own.to_str().unwrap()])
            .status
            .success());
        // The limit: without the sticky bit, any writer removes any record.
        let plain = dir.0.join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777)).unwrap();
        write(&plain, &a, &info(&a)).unwrap();
        let rm = as_uid(&["rm", "-f", path_for(&plain, &a).to_str().unwrap()]);
        assert!(rm.status.success(), "{rm:?}");
        assert_eq!(read(&plain, &a).unwrap(), None);
    }

    #[test]
    fn only_well_formed_names_map_back() {
        assert_eq!(
            marker_of("n:c:eth0-device.json"),
            Some(Marker::new("n", "c", "eth0").unwrap())
        );
        for bad in [
            "n:c:eth0.json",
            "n:c-device.json",
            "n:../x:eth0-device.json",
            ":c:eth0-device.json",
            "n:c:..-device.json",
        ] {
            assert_eq!(marker_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_symlink_sprayed_at_the_file_name_is_replaced_not_written_through() {
        let dir = TempDir::new();
        let m = Marker::new("n", "c", "eth0").unwrap();
        std::fs::create_dir_all(dir.0.join("devinfo")).unwrap();
        let secret = dir.0.join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let sub = dir.0.join("devinfo");
        std::os::unix::fs::symlink(&secret, path_for(&sub, &m)).unwrap();
        write(&sub, &m, &info(&m)).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
        assert_eq!(read(&sub, &m).unwrap(), Some(info(&m)));
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let dir = TempDir::new();
        let m = Marker::new("n", "c", "eth0").unwrap();
        let elsewhere = dir.0.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.0.join("cni")).unwrap();
        let err = write(&dir.0.join("cni"), &m, &info(&m)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(list(&dir.0.join("cni"), "n").is_err());
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written through the link"
        );
    }

    #[test]
    fn check_refuses_a_device_a_fifo_or_a_huge_file_at_the_name() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let m = Marker::new("n", "c", "eth0").unwrap();
        let p = path_for(&dir.0, &m);
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let err = read(&dir.0, &m).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let err = read(&dir.0, &m).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a FIFO must not hang CHECK"
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b' '; READ_LIMIT as usize + 1]).unwrap();
        let err = read(&dir.0, &m).unwrap_err();
        assert!(
            matches!(err, DevInfoError::Fs(SafeFsError::TooLarge { .. })),
            "{err}"
        );
        // remove() takes the entry itself away, whatever it is.
        assert!(remove(&dir.0, &m).unwrap());
    }

    #[test]
    fn the_longest_attachment_name_still_writes() {
        // The temporary name used to be the final name plus a prefix and a pid: past 255 bytes
        // for long markers (ADD failed with 109).
        let dir = TempDir::new();
        let cid = (1..=255)
            .rev()
            .map(|n| "c".repeat(n))
            .find(|c| Marker::new("n", c, "eth0").is_ok())
            .unwrap();
        let m = Marker::new("n", &cid, "eth0").unwrap();
        let p = write(&dir.0, &m, &info(&m)).unwrap();
        assert!(
            p.file_name().unwrap().len() > 200,
            "a long name was tested: {}",
            p.display()
        );
        assert_eq!(read(&dir.0, &m).unwrap(), Some(info(&m)));
    }

    #[test]
    fn a_corrupt_file_is_a_decode_error_naming_it() {
        let dir = TempDir::new();
        let m = Marker::new("n", "c", "eth0").unwrap();
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(path_for(&dir.0, &m), b"{not json").unwrap();
        let err = read(&dir.0, &m).unwrap_err();
        assert!(matches!(err, DevInfoError::Decode { .. }));
        assert!(err.to_string().contains("n:c:eth0-device.json"), "{err}");
    }
}
