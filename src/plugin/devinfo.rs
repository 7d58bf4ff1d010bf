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
//!     "xdp": {"xsk-map": "/sys/fs/bpf/netkit-cni/netns1-if4/pods/c1/eth0/xsks",
//!             "start-queue": 1, "queue-count": 2, "map-start-index": 1}
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

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::link::Marker;

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
    #[error("device-info file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("device-info file {path} is not valid: {source}")]
    Decode { path: PathBuf, source: serde_json::Error },
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
}

impl XdpInfo {
    pub fn from_handoff(h: &crate::xdp::PodHandoff) -> XdpInfo {
        let v = h.vqueues();
        let start = v.first().copied().unwrap_or(0);
        XdpInfo { xsk_map: h.xskmap_pin.display().to_string(), start_queue: start, queue_count: v.len() as u32, map_start_index: start }
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
        DeviceInfo { kind: DEVICE_TYPE.into(), version: SPEC_VERSION.into(), lease }
    }
}

/// `<dir>/<network>:<container id>:<ifname>-device.json`.
pub fn path_for(dir: &Path, marker: &Marker) -> PathBuf {
    dir.join(format!("{}{SEP}{}{SEP}{}{SUFFIX}", marker.network(), marker.container_id(), marker.ifname()))
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
/// as the spec asks of CNI plugins. Readers never see a half-written file.
pub fn write(dir: &Path, marker: &Marker, info: &DeviceInfo) -> Result<PathBuf, DevInfoError> {
    let path = path_for(dir, marker);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevInfoError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("device"), std::process::id()));
    let body = serde_json::to_vec_pretty(info).expect("a DeviceInfo always serializes");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&body)?;
        f.write_all(b"\n")
    });
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(DevInfoError::Io { path, source: e });
    }
    Ok(path)
}

/// The attachment's file, `None` if there is none.
pub fn read(dir: &Path, marker: &Marker) -> Result<Option<DeviceInfo>, DevInfoError> {
    let path = path_for(dir, marker);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DevInfoError::Io { path, source }),
    };
    serde_json::from_slice(&body).map(Some).map_err(|source| DevInfoError::Decode { path, source })
}

/// Removes the attachment's file; `false` if there was none.
pub fn remove(dir: &Path, marker: &Marker) -> Result<bool, DevInfoError> {
    let path = path_for(dir, marker);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DevInfoError::Io { path, source }),
    }
}

/// The attachments of `network` that have a file in `dir` (none if `dir` does not exist).
pub fn list(dir: &Path, network: &str) -> Result<Vec<Marker>, DevInfoError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(DevInfoError::Io { path: dir.to_path_buf(), source }),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| DevInfoError::Io { path: dir.to_path_buf(), source })?;
        if let Some(m) = entry.file_name().to_str().and_then(marker_of) {
            if m.network() == network {
                out.push(m);
            }
        }
    }
    out.sort_by_key(|m| m.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let mut r = [0u8; 6];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut r).unwrap();
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
            master: MasterInfo { name: "ens1f0".into(), ifindex: 4 },
            queues: vec![QueueMap { physical: 3, virtual_id: 1 }, QueueMap { physical: 5, virtual_id: 2 }],
            xdp: None,
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
        assert_eq!(s["queues"][1], serde_json::json!({"physical": 5, "virtual": 2}));
    }

    #[test]
    fn write_read_list_remove_round_trip() {
        let dir = TempDir::new();
        let sub = dir.0.join("devinfo/cni");
        let a = Marker::new("net-a", "c1", "eth0").unwrap();
        let b = Marker::new("net", "a-c1", "eth0").unwrap(); // same text joined with '-'
        let other = Marker::new("net-b", "c9", "net1").unwrap();
        assert_eq!(list(&sub, "net-a").unwrap(), vec![], "a missing directory lists nothing");
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
        let leftovers: Vec<String> = std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!leftovers.iter().any(|n| n.ends_with(".tmp")), "{leftovers:?}");
    }

    #[test]
    fn only_well_formed_names_map_back() {
        assert_eq!(marker_of("n:c:eth0-device.json"), Some(Marker::new("n", "c", "eth0").unwrap()));
        for bad in ["n:c:eth0.json", "n:c-device.json", "n:../x:eth0-device.json", ":c:eth0-device.json", "n:c:..-device.json"] {
            assert_eq!(marker_of(bad), None, "{bad}");
        }
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
