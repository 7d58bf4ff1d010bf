//! Network sysctls (`/proc/sys/net/...`) of the calling thread's network namespace.
//!
//! `/proc/sys/net` resolves per *thread*: the kernel picks the table set of the opening
//! task's netns. To change a pod's sysctls, call these inside
//! [`crate::kernel::netns::NetNs::run`]; on the main thread they act on the host.

use std::{
    fmt,
    fs::OpenOptions,
    io::{Read, Write},
    path::{Path, PathBuf},
};

const PROC_SYS: &str = "/proc/sys";

/// Errors reading or writing a sysctl.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysctlError {
    /// The key is malformed or outside `net.*`.
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The value cannot be written as one sysctl line.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: SysctlKey,
        value: String,
        reason: &'static str,
    },
    /// No such sysctl in this namespace (e.g. `net.ipv6.*` with IPv6 disabled, or a
    /// per-interface key for a missing interface).
    #[error("sysctl {key} does not exist in this network namespace")]
    NotFound { key: SysctlKey },
    /// Any other I/O failure (EPERM/EACCES for read-only namespaces, EINVAL for values the
    /// kernel rejects, ...).
    #[error("{op} sysctl {key}: {source}")]
    Io {
        op: &'static str,
        key: SysctlKey,
        source: std::io::Error,
    },
}

/// A validated key below `net`, e.g. `net.ipv4.ip_forward`. Components are kept separately
/// because interface names may contain dots (`net.ipv4.conf.eth0.100.rp_filter` is ambiguous in
/// dotted form); build such keys with [`SysctlKey::from_components`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SysctlKey(Vec<String>);

impl SysctlKey {
    /// Parses a dotted (`net.ipv4.ip_forward`) or slashed (`net/ipv4/ip_forward`) key.
    pub fn parse(key: &str) -> Result<SysctlKey, SysctlError> {
        let sep = if key.contains('/') { '/' } else { '.' };
        Self::from_components(key.split(sep)).map_err(|reason| SysctlError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    }

    /// Builds a key from path components, each a single file name.
    pub fn from_components<I, S>(components: I) -> Result<SysctlKey, &'static str>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parts: Vec<String> = components
            .into_iter()
            .map(|c| c.as_ref().to_string())
            .collect();
        if parts.first().map(String::as_str) != Some("net") {
            return Err("only keys below net are supported");
        }
        if parts.len() < 2 {
            return Err("names a directory, not a value");
        }
        for part in &parts {
            if part.is_empty() || part == "." || part == ".." {
                return Err("empty or relative path component");
            }
            if part.bytes().any(|b| b == b'/' || b == 0) {
                return Err("component contains '/' or NUL");
            }
        }
        Ok(SysctlKey(parts))
    }

    /// `net.ipv4.ip_forward`.
    pub fn ipv4_forward() -> SysctlKey {
        SysctlKey(vec!["net".into(), "ipv4".into(), "ip_forward".into()])
    }

    /// `net.ipv6.conf.all.forwarding`.
    pub fn ipv6_forwarding() -> SysctlKey {
        SysctlKey(
            ["net", "ipv6", "conf", "all", "forwarding"]
                .map(String::from)
                .to_vec(),
        )
    }

    /// `net.ipv4.conf.<iface>.<leaf>`; `iface` may be `all`, `default` or an interface name.
    pub fn ipv4_conf(iface: &str, leaf: &str) -> Result<SysctlKey, SysctlError> {
        Self::from_components(["net", "ipv4", "conf", iface, leaf]).map_err(|reason| {
            SysctlError::InvalidKey {
                key: format!("net.ipv4.conf.{iface}.{leaf}"),
                reason,
            }
        })
    }

    /// `net.ipv6.conf.<iface>.<leaf>`.
    pub fn ipv6_conf(iface: &str, leaf: &str) -> Result<SysctlKey, SysctlError> {
        Self::from_components(["net", "ipv6", "conf", iface, leaf]).map_err(|reason| {
            SysctlError::InvalidKey {
                key: format!("net.ipv6.conf.{iface}.{leaf}"),
                reason,
            }
        })
    }

    fn path_under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(&self.0);
        p
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Slashes when a component has a dot, as sysctl(8) does, so the text is unambiguous.
        let sep = if self.0.iter().any(|c| c.contains('.')) {
            "/"
        } else {
            "."
        };
        f.write_str(&self.0.join(sep))
    }
}

/// Reads a sysctl of the calling thread's netns, without the trailing newline.
pub fn read(key: &SysctlKey) -> Result<String, SysctlError> {
    read_under(Path::new(PROC_SYS), key)
}

/// Writes a sysctl of the calling thread's netns.
pub fn write(key: &SysctlKey, value: &str) -> Result<(), SysctlError> {
    write_under(Path::new(PROC_SYS), key, value)
}

/// Writes only if the current value differs; returns whether it wrote. Avoids needless
/// writes: e.g. writing `net.ipv6.conf.all.forwarding` re-applies it to every interface.
pub fn ensure(key: &SysctlKey, value: &str) -> Result<bool, SysctlError> {
    ensure_under(Path::new(PROC_SYS), key, value)
}

fn io_error(op: &'static str, key: &SysctlKey, source: std::io::Error) -> SysctlError {
    if source.kind() == std::io::ErrorKind::NotFound {
        SysctlError::NotFound { key: key.clone() }
    } else {
        SysctlError::Io {
            op,
            key: key.clone(),
            source,
        }
    }
}

fn read_under(root: &Path, key: &SysctlKey) -> Result<String, SysctlError> {
    let mut s = String::new();
    std::fs::File::open(key.path_under(root))
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| io_error("read", key, e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

fn write_under(root: &Path, key: &SysctlKey, value: &str) -> Result<(), SysctlError> {
    if value.contains('\n') || value.contains('\0') || value.is_empty() {
        return Err(SysctlError::InvalidValue {
            key: key.clone(),
            value: value.to_string(),
            reason: "must be a non-empty single line",
        });
    }
    // Never create: a missing file means the key does not exist in this namespace. One write
    // call, because proc handlers parse each write separately.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(key.path_under(root))
        .map_err(|e| io_error("open", key, e))?;
    f.write_all(format!("{value}\n").as_bytes())
        .map_err(|e| io_error("write", key, e))
}

fn ensure_under(root: &Path, key: &SysctlKey, value: &str) -> Result<bool, SysctlError> {
    // Compare whitespace-normalised: multi-value sysctls read back tab-separated.
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(&read_under(root, key)?) == norm(value) {
        return Ok(false);
    }
    write_under(root, key, value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc/sys` tree in a unique temp dir, removed on drop.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new() -> FakeProc {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netkit-cni-sysctl-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
            std::fs::write(dir.join("net/ipv4/ip_forward"), "0\n").unwrap();
            FakeProc(dir)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn key_validation() {
        assert_eq!(
            SysctlKey::parse("net.ipv4.ip_forward").unwrap(),
            SysctlKey::ipv4_forward()
        );
        assert_eq!(
            SysctlKey::parse("net/ipv4/ip_forward").unwrap(),
            SysctlKey::ipv4_forward()
        );
        for bad in [
            "",
            "net",
            "kernel.hostname",
            "net..ipv4",
            "net/../kernel/hostname",
            "net/./ipv4",
            "/net/ipv4/ip_forward",
            "net.ipv4.ip_forward\0",
        ] {
            assert!(
                matches!(SysctlKey::parse(bad), Err(SysctlError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        assert!(SysctlKey::ipv4_conf("../x", "rp_filter").is_err());
        assert!(SysctlKey::ipv4_conf("eth0/x", "rp_filter").is_err());
    }

    #[test]
    fn dotted_interface_names_stay_one_component() {
        let key = SysctlKey::ipv4_conf("eth0.100", "rp_filter").unwrap();
        assert_eq!(key.0.len(), 5);
        assert_eq!(key.to_string(), "net/ipv4/conf/eth0.100/rp_filter");
        assert_eq!(
            SysctlKey::ipv6_forwarding().to_string(),
            "net.ipv6.conf.all.forwarding"
        );
        assert_eq!(
            SysctlKey::ipv4_conf("eth0.100", "rp_filter")
                .unwrap()
                .path_under(Path::new("/r")),
            Path::new("/r/net/ipv4/conf/eth0.100/rp_filter")
        );
    }

    #[test]
    fn write_read_ensure_against_fake_tree() {
        let root = FakeProc::new();
        let key = SysctlKey::ipv4_forward();
        assert_eq!(read_under(&root.0, &key).unwrap(), "0");
        assert!(ensure_under(&root.0, &key, "1").unwrap());
        assert_eq!(
            std::fs::read_to_string(root.0.join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        assert!(!ensure_under(&root.0, &key, "1").unwrap());
        write_under(&root.0, &key, "0").unwrap();
        assert_eq!(read_under(&root.0, &key).unwrap(), "0");
    }

    #[test]
    fn missing_key_is_not_found_and_never_created() {
        let root = FakeProc::new();
        let key = SysctlKey::ipv6_forwarding();
        assert!(matches!(
            read_under(&root.0, &key),
            Err(SysctlError::NotFound { .. })
        ));
        assert!(matches!(
            write_under(&root.0, &key, "1"),
            Err(SysctlError::NotFound { .. })
        ));
        assert!(!key.path_under(&root.0).exists());
    }

    #[test]
    fn multi_line_values_are_rejected() {
        let root = FakeProc::new();
        let key = SysctlKey::ipv4_forward();
        for bad in ["1\n0", "", "1\0"] {
            assert!(matches!(
                write_under(&root.0, &key, bad),
                Err(SysctlError::InvalidValue { .. })
            ));
        }
        assert_eq!(read_under(&root.0, &key).unwrap(), "0");
    }

    #[test]
    fn reads_the_real_ip_forward() {
        // Read-only on the host netns.
        let v = read(&SysctlKey::ipv4_forward()).unwrap();
        assert!(v == "0" || v == "1", "{v:?}");
    }
}
