//! IPAM delegation (spec section 4): run the `ipam.type` plugin found in CNI_PATH with our
//! environment and the complete network config, and read back its result or error.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use crate::cni::env::CNI_COMMAND;
use crate::cni::error::render_value;
use crate::cni::{codes, CniError, CniResult, CniVersion, Command};
use crate::config::{ipam_type_problem, NetConf};

/// The operations IPAM is delegated (VERSION is never delegated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamOp {
    Add,
    Del,
    Check,
    Gc,
    Status,
}

impl IpamOp {
    pub fn command(self) -> Command {
        match self {
            IpamOp::Add => Command::Add,
            IpamOp::Del => Command::Del,
            IpamOp::Check => Command::Check,
            IpamOp::Gc => Command::Gc,
            IpamOp::Status => Command::Status,
        }
    }
}

impl fmt::Display for IpamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command().as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid ipam.type {plugin_type:?}: {reason}")]
    InvalidType {
        plugin_type: String,
        reason: &'static str,
    },
    #[error("the network config has no ipam section to delegate to")]
    NotConfigured,
    #[error("IPAM plugin {plugin_type:?} not found in CNI_PATH {:?}", join_paths(.searched))]
    NotFound {
        plugin_type: String,
        searched: Vec<PathBuf>,
        not_executable: Vec<PathBuf>,
    },
    #[error("failed to execute IPAM plugin {} for {op}: {source}", path.display())]
    Exec {
        path: PathBuf,
        op: IpamOp,
        source: io::Error,
    },
    /// The plugin's own CNI error object, passed on with its code and message.
    #[error("IPAM plugin {plugin_type:?} failed on {op}: {error}")]
    Plugin {
        plugin_type: String,
        op: IpamOp,
        error: CniError,
    },
    #[error("IPAM plugin {plugin_type:?} failed on {op} ({status}) without a CNI error object")]
    Failed {
        plugin_type: String,
        op: IpamOp,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("IPAM plugin {plugin_type:?} returned an unusable ADD result: {error}")]
    BadResult {
        plugin_type: String,
        error: CniError,
    },
}

fn join_paths(paths: &[PathBuf]) -> String {
    let v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.join(":")
}

/// Keeps error details readable when a plugin dumps a lot of output.
fn tail(bytes: &[u8]) -> String {
    const MAX: usize = 2048;
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut start = s.len() - MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::InvalidType {
                ref plugin_type,
                reason,
            } => CniError::invalid_config(
                format!(
                    "invalid value {} for field ipam.type",
                    render_value(&Value::from(plugin_type.as_str()))
                ),
                reason,
            ),
            IpamError::NotConfigured => CniError::invalid_config(
                "field ipam is missing",
                "IPAM delegation needs an ipam section",
            ),
            IpamError::NotFound {
                ref not_executable, ..
            } => {
                let details = if not_executable.is_empty() {
                    "install the IPAM plugin into one of these directories or fix ipam.type"
                        .to_owned()
                } else {
                    format!("present but not executable: {}", join_paths(not_executable))
                };
                CniError::invalid_config(e.to_string(), details)
            }
            IpamError::Exec { ref source, .. } => {
                let details = source.to_string();
                CniError::io(e.to_string(), details)
            }
            IpamError::Plugin {
                plugin_type,
                op,
                error,
            } => {
                let origin = format!("from IPAM plugin {plugin_type:?} on {op}");
                let details = if error.details.is_empty() {
                    origin
                } else {
                    format!("{} ({origin})", error.details)
                };
                CniError::new(error.code, error.msg, details)
            }
            IpamError::Failed {
                ref stdout,
                ref stderr,
                ..
            } => {
                let details = format!("stdout: {stdout:?}; stderr: {stderr:?}");
                CniError::plugin_specific(codes::DELEGATE_FAILED, e.to_string(), details)
            }
            IpamError::BadResult { plugin_type, error } => CniError::new(
                error.code,
                format!(
                    "IPAM plugin {plugin_type:?} returned an unusable ADD result: {}",
                    error.msg
                ),
                error.details,
            ),
        }
    }
}

/// Finds `plugin_type` in the CNI_PATH directories, first match wins as with libcni. Files that
/// exist but are not executable are skipped (and reported if nothing else matches), so a stray
/// copy in an early directory does not shadow a working one later.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf, IpamError> {
    // Checked here as well as in config: this is where the name meets the filesystem.
    if let Some(reason) = ipam_type_problem(plugin_type) {
        return Err(IpamError::InvalidType {
            plugin_type: plugin_type.to_owned(),
            reason,
        });
    }
    let mut not_executable = Vec::new();
    for dir in cni_path {
        let candidate = dir.join(plugin_type);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => not_executable.push(candidate),
            _ => {}
        }
    }
    Err(IpamError::NotFound {
        plugin_type: plugin_type.to_owned(),
        searched: cni_path.to_vec(),
        not_executable,
    })
}

/// A located IPAM plugin bound to one network config and environment.
pub struct Ipam {
    plugin_type: String,
    exe: PathBuf,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    version: CniVersion,
    stderr: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for Ipam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipam")
            .field("plugin_type", &self.plugin_type)
            .field("exe", &self.exe)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// Delegation for `conf`'s `ipam` block. `env` is the environment the plugin itself was given
    /// (e.g. `std::env::vars()`): the spec has delegates run with the same environment, and only
    /// CNI_COMMAND is replaced per operation. The delegate gets `conf.raw` on stdin.
    pub fn new(
        conf: &NetConf,
        cni_path: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Ipam, IpamError> {
        let ipam = conf.ipam.as_ref().ok_or(IpamError::NotConfigured)?;
        Self::with_plugin(
            &ipam.plugin_type,
            &conf.raw,
            conf.cni_version,
            cni_path,
            env,
        )
    }

    /// As [`Ipam::new`] without a parsed [`NetConf`]: `netconf` is sent as is, and `version` is
    /// what an ADD result is read as when the plugin's output does not name its own version.
    pub fn with_plugin(
        plugin_type: &str,
        netconf: &Value,
        version: CniVersion,
        cni_path: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Ipam, IpamError> {
        let exe = find_plugin(plugin_type, cni_path)?;
        Ok(Ipam {
            plugin_type: plugin_type.to_owned(),
            exe,
            env: env.into_iter().filter(|(k, _)| k != CNI_COMMAND).collect(),
            stdin: serde_json::to_vec(netconf).expect("serializing a serde_json::Value"),
            version,
            stderr: Mutex::new(Box::new(io::stderr())),
        })
    }

    /// Where the delegate's stderr is copied (default: our stderr, as the spec requires).
    pub fn with_stderr(mut self, sink: Box<dyn Write + Send>) -> Ipam {
        self.stderr = Mutex::new(sink);
        self
    }

    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    pub fn executable(&self) -> &Path {
        &self.exe
    }

    /// Allocates addresses. The result is abbreviated (no interfaces): the caller assigns
    /// interface indexes, then merges it into its own result.
    pub fn add(&self) -> Result<CniResult, IpamError> {
        let stdout = self.run(IpamOp::Add)?;
        let bad = |error: CniError| IpamError::BadResult {
            plugin_type: self.plugin_type.clone(),
            error,
        };
        let mut value: Value = serde_json::from_slice(&stdout).map_err(|e| {
            bad(CniError::decode(
                format!("stdout is not JSON: {:?}", tail(&stdout)),
                e.to_string(),
            ))
        })?;
        // Plugins answer in the version they were asked for, but one that supports only older
        // versions may answer in its own; what matters is that we can read what it declares.
        let version = match value.get("cniVersion").and_then(Value::as_str) {
            Some(v) => CniVersion::parse(v).map_err(bad)?,
            None => self.version,
        };
        // IPAM must not report interfaces; drop them if it does, since indexes into a list we
        // replace would point at the wrong interfaces after the caller merges.
        if let Some(obj) = value.as_object_mut() {
            obj.remove("interfaces");
            if let Some(Value::Array(ips)) = obj.get_mut("ips") {
                for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                    ip.remove("interface");
                }
            }
        }
        CniResult::from_json(&value, version).map_err(bad)
    }

    pub fn del(&self) -> Result<(), IpamError> {
        self.run(IpamOp::Del).map(drop)
    }

    pub fn check(&self) -> Result<(), IpamError> {
        self.run(IpamOp::Check).map(drop)
    }

    pub fn gc(&self) -> Result<(), IpamError> {
        self.run(IpamOp::Gc).map(drop)
    }

    pub fn status(&self) -> Result<(), IpamError> {
        self.run(IpamOp::Status).map(drop)
    }

    /// Runs one operation and returns stdout on success.
    pub fn run(&self, op: IpamOp) -> Result<Vec<u8>, IpamError> {
        let exec_err = |source| IpamError::Exec {
            path: self.exe.clone(),
            op,
            source,
        };
        let mut child = Process::new(&self.exe)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(CNI_COMMAND, op.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // Written from a second thread: a plugin that prints before it has read all its input
        // would otherwise deadlock against us once both pipe buffers fill.
        let (write_result, output) = std::thread::scope(|s| {
            let writer = s.spawn(move || stdin.write_all(&self.stdin));
            let output = child.wait_with_output();
            (writer.join().expect("stdin writer panicked"), output)
        });
        let output = output.map_err(exec_err)?;

        if !output.stderr.is_empty() {
            let mut sink = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            let _ = sink.write_all(&output.stderr);
            let _ = sink.flush();
        }

        if !output.status.success() {
            return Err(self.failure(op, output.status, &output.stdout, &output.stderr));
        }
        match write_result {
            // A plugin may exit without reading its config (e.g. a trivial STATUS).
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(exec_err(e)),
            _ => Ok(output.stdout),
        }
    }

    fn failure(&self, op: IpamOp, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> IpamError {
        let plugin_type = self.plugin_type.clone();
        if let Some(error) = serde_json::from_slice(stdout)
            .ok()
            .as_ref()
            .and_then(CniError::from_json)
        {
            return IpamError::Plugin {
                plugin_type,
                op,
                error,
            };
        }
        let status = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => status.to_string(),
        };
        IpamError::Failed {
            plugin_type,
            op,
            status,
            stdout: tail(stdout),
            stderr: tail(stderr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};

    /// Writing an executable while another test thread forks can leave the write fd open in the
    /// child for a moment, and exec then fails with ETXTBSY. Script creation takes this lock
    /// exclusively; anything that spawns processes holds it shared.
    static EXEC_LOCK: RwLock<()> = RwLock::new(());

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let d =
                std::env::temp_dir().join(format!("netkit-cni-ipam-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }

        fn script(&self, dir: &str, name: &str, body: &str) -> PathBuf {
            let _w = EXEC_LOCK.write().unwrap_or_else(|p| p.into_inner());
            let d = self.0.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn conf(version: &str, ipam_type: &str) -> NetConf {
        NetConf::from_value(json!({
            "cniVersion": version,
            "name": "pods",
            "type": "netkit-cni",
            "ipam": {"type": ipam_type, "subnet": "10.9.0.0/24"},
            "mtu": 1500
        }))
        .unwrap()
    }

    fn env(dir: &Path) -> Vec<(String, String)> {
        [
            ("PATH", "/usr/bin:/bin"),
            (CNI_COMMAND, "SHOULD-BE-REPLACED"),
            ("CNI_CONTAINERID", "ctr-1"),
            ("CNI_NETNS", "/var/run/netns/ctr-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web-0"),
            ("CNI_PATH", dir.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A fake IPAM that records its environment and stdin per command, then runs `tail`.
    fn recording_ipam(t: &TempDir, tail_body: &str) -> PathBuf {
        let rec = t.0.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let body = format!(
            "env > {rec}/env.$CNI_COMMAND\ncat > {rec}/stdin.$CNI_COMMAND\n{tail_body}",
            rec = rec.display()
        );
        t.script("bin", "fake-ipam", &body);
        t.0.join("bin")
    }

    fn read_env(path: &Path) -> BTreeMap<String, String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn add_passes_env_and_full_config_and_reads_result() {
        let t = TempDir::new("add");
        let bin = recording_ipam(
            &t,
            r#"echo '{"cniVersion":"1.1.0","ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"}],
                      "routes":[{"dst":"0.0.0.0/0","table":100}],"dns":{"nameservers":["10.9.0.1"]}}'"#,
        );
        let c = conf("1.1.0", "fake-ipam");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(&c, &[t.0.join("empty"), bin.clone()], env(&bin)).unwrap();
        assert_eq!(ipam.executable(), bin.join("fake-ipam"));
        assert_eq!(ipam.plugin_type(), "fake-ipam");

        let r = ipam.add().unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.5/24");
        assert_eq!(r.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(r.routes[0].table, Some(100));
        assert_eq!(r.dns.nameservers, vec!["10.9.0.1"]);

        let e = read_env(&t.0.join("rec/env.ADD"));
        assert_eq!(e["CNI_COMMAND"], "ADD");
        assert_eq!(e["CNI_CONTAINERID"], "ctr-1");
        assert_eq!(e["CNI_NETNS"], "/var/run/netns/ctr-1");
        assert_eq!(e["CNI_IFNAME"], "eth0");
        assert_eq!(e["CNI_ARGS"], "IgnoreUnknown=1;K8S_POD_NAME=web-0");
        assert_eq!(e["CNI_PATH"], bin.to_str().unwrap());
        let stdin: Value =
            serde_json::from_slice(&std::fs::read(t.0.join("rec/stdin.ADD")).unwrap()).unwrap();
        assert_eq!(stdin, c.raw, "the delegate must get the complete config");
        assert_eq!(stdin["mtu"], 1500);
    }

    #[test]
    fn every_op_sets_its_command() {
        let t = TempDir::new("ops");
        let bin = recording_ipam(&t, "exit 0");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.1.0", "fake-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        ipam.del().unwrap();
        ipam.check().unwrap();
        ipam.gc().unwrap();
        ipam.status().unwrap();
        for cmd in ["DEL", "CHECK", "GC", "STATUS"] {
            let e = read_env(&t.0.join(format!("rec/env.{cmd}")));
            assert_eq!(e["CNI_COMMAND"], cmd);
            assert_eq!(e["CNI_CONTAINERID"], "ctr-1", "{cmd}");
            let stdin = std::fs::read(t.0.join(format!("rec/stdin.{cmd}"))).unwrap();
            assert_eq!(
                serde_json::from_slice::<Value>(&stdin).unwrap()["name"],
                "pods"
            );
        }
    }

    #[test]
    fn plugin_error_object_keeps_code_and_msg() {
        let t = TempDir::new("errobj");
        t.script(
            "bin",
            "busy-ipam",
            r#"cat >/dev/null
echo '{"cniVersion":"1.1.0","code":11,"msg":"range exhausted, retry","details":"pool 10.9.0.0/24"}'
exit 1"#,
        );
        let bin = t.0.join("bin");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.1.0", "busy-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        for op in [
            IpamOp::Add,
            IpamOp::Del,
            IpamOp::Check,
            IpamOp::Gc,
            IpamOp::Status,
        ] {
            let err = ipam.run(op).unwrap_err();
            assert!(
                matches!(err, IpamError::Plugin { op: o, .. } if o == op),
                "{err:?}"
            );
            let cni: CniError = err.into();
            assert_eq!(cni.code, 11);
            assert_eq!(cni.msg, "range exhausted, retry");
            assert!(cni.details.contains("pool 10.9.0.0/24"), "{}", cni.details);
            assert!(
                cni.details.contains("busy-ipam") && cni.details.contains(&op.to_string()),
                "{}",
                cni.details
            );
        }
    }

    #[test]
    fn failure_without_error_object_is_code_100_with_output() {
        let t = TempDir::new("garbage");
        t.script(
            "bin",
            "broken",
            "echo 'panic: nil map' >&2\necho not-json\nexit 3",
        );
        t.script("bin", "killed", "kill -9 $$");
        let bin = t.0.join("bin");
        let sink = Buf::default();
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.1.0", "broken"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap()
        .with_stderr(Box::new(sink.clone()));
        let err = ipam.add().unwrap_err();
        assert!(
            matches!(&err, IpamError::Failed { status, .. } if status == "exit status 3"),
            "{err:?}"
        );
        let cni: CniError = err.into();
        assert_eq!(cni.code, codes::DELEGATE_FAILED);
        assert!(
            cni.msg.contains("\"broken\"")
                && cni.msg.contains("ADD")
                && cni.msg.contains("exit status 3"),
            "{}",
            cni.msg
        );
        assert!(
            cni.details.contains("not-json") && cni.details.contains("panic: nil map"),
            "{}",
            cni.details
        );
        // The delegate's stderr still reaches ours.
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            "panic: nil map\n"
        );

        let ipam = Ipam::new(
            &conf("1.1.0", "killed"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        let cni: CniError = ipam.del().unwrap_err().into();
        assert_eq!(cni.code, codes::DELEGATE_FAILED);
        assert!(cni.msg.contains("killed by signal 9"), "{}", cni.msg);
    }

    #[test]
    fn unusable_add_results() {
        let t = TempDir::new("badresult");
        t.script("bin", "notjson", "echo 'allocated 10.0.0.1'");
        t.script(
            "bin",
            "oldver",
            r#"echo '{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}'"#,
        );
        t.script(
            "bin",
            "badaddr",
            r#"echo '{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2"}]}'"#,
        );
        let bin = t.0.join("bin");
        let _r = EXEC_LOCK.read().unwrap();
        let add = |ty: &str| -> CniError {
            Ipam::new(&conf("1.1.0", ty), std::slice::from_ref(&bin), env(&bin))
                .unwrap()
                .add()
                .unwrap_err()
                .into()
        };
        let e = add("notjson");
        assert_eq!(e.code, 6);
        assert!(
            e.msg.contains("\"notjson\"") && e.msg.contains("allocated 10.0.0.1"),
            "{}",
            e.msg
        );
        let e = add("oldver");
        assert_eq!(e.code, 1);
        assert!(
            e.msg.contains("\"oldver\"") && e.msg.contains("\"0.2.0\""),
            "{}",
            e.msg
        );
        let e = add("badaddr");
        assert_eq!(e.code, 6);
        assert!(
            e.msg.contains("ips[0].address") && e.msg.contains("\"10.0.0.2\""),
            "{}",
            e.msg
        );
    }

    #[test]
    fn add_result_in_the_plugins_own_version_and_interfaces_stripped() {
        let t = TempDir::new("ownver");
        // An older IPAM answering in 0.4.0 shape, wrongly including interface data.
        t.script(
            "bin",
            "old-ipam",
            r#"echo '{"cniVersion":"0.4.0","interfaces":[{"name":"x"}],
                     "ips":[{"version":"4","address":"10.0.0.2/24","interface":0}]}'"#,
        );
        t.script(
            "bin",
            "nover",
            r#"echo '{"ips":[{"address":"fd00::2/64"}]}'"#,
        );
        let bin = t.0.join("bin");
        let _r = EXEC_LOCK.read().unwrap();
        let r = Ipam::new(
            &conf("1.1.0", "old-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap()
        .add()
        .unwrap();
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
        // Without a declared version the output is read as the config's version.
        let r = Ipam::new(
            &conf("1.0.0", "nover"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap()
        .add()
        .unwrap();
        assert_eq!(r.ips[0].address.to_string(), "fd00::2/64");
    }

    #[test]
    fn missing_plugin_names_type_and_path() {
        let t = TempDir::new("missing");
        let a = t.0.join("a");
        let b = t.0.join("b");
        let err = find_plugin("nope", &[a.clone(), b.clone()]).unwrap_err();
        let cni: CniError = err.into();
        assert_eq!(cni.code, 7);
        let path = format!("{}:{}", a.display(), b.display());
        assert!(
            cni.msg.contains("\"nope\"") && cni.msg.contains(&path),
            "{}",
            cni.msg
        );
        assert!(cni.msg.contains("CNI_PATH"), "{}", cni.msg);

        let err = Ipam::new(&conf("1.1.0", "nope"), &[a], Vec::new()).unwrap_err();
        assert!(matches!(err, IpamError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn non_executable_copy_is_skipped_and_reported() {
        let t = TempDir::new("noexec");
        let first = t.0.join("first");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::write(first.join("ipam-x"), "not a program").unwrap();
        let err = find_plugin("ipam-x", std::slice::from_ref(&first)).unwrap_err();
        let cni: CniError = err.into();
        assert_eq!(cni.code, 7);
        assert!(
            cni.details.contains("not executable") && cni.details.contains("first/ipam-x"),
            "{}",
            cni.details
        );

        let real = t.script("second", "ipam-x", "exit 0");
        assert_eq!(
            find_plugin("ipam-x", &[first, t.0.join("second")]).unwrap(),
            real
        );
    }

    #[test]
    fn path_like_types_are_rejected_before_lookup() {
        let t = TempDir::new("traversal");
        // Even with a real executable where the traversal would land.
        t.script("bin", "sh", "exit 0");
        let inner = t.0.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        for bad in ["../bin/sh", "bin/sh", "/bin/sh", "..", "", "a..b"] {
            let err = find_plugin(bad, std::slice::from_ref(&inner)).unwrap_err();
            assert!(
                matches!(err, IpamError::InvalidType { .. }),
                "{bad}: {err:?}"
            );
            let cni: CniError = err.into();
            assert_eq!(cni.code, 7, "{bad}");
            assert!(
                cni.msg.contains("ipam.type") && cni.msg.contains(&format!("{bad:?}")),
                "{}",
                cni.msg
            );
        }
    }

    #[test]
    fn missing_ipam_section() {
        let c = NetConf::from_value(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "netkit-cni", "pairing": "single"
        }))
        .unwrap();
        let err = Ipam::new(&c, &[PathBuf::from("/nonexistent")], Vec::new()).unwrap_err();
        let cni: CniError = err.into();
        assert_eq!(cni.code, 7);
        assert!(cni.msg.contains("ipam"), "{}", cni.msg);
    }

    #[test]
    fn large_config_to_a_plugin_that_ignores_stdin() {
        let t = TempDir::new("bigstdin");
        // Prints more than a pipe buffer without reading its (also large) stdin.
        t.script(
            "bin",
            "chatty",
            "head -c 200000 /dev/zero | tr '\\0' 'x' >&2\nexit 0",
        );
        let bin = t.0.join("bin");
        let big = json!({
            "cniVersion": "1.1.0", "name": "n", "type": "netkit-cni",
            "ipam": {"type": "chatty", "padding": "y".repeat(1 << 20)}
        });
        let sink = Buf::default();
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::with_plugin(
            "chatty",
            &big,
            CniVersion::V1_1_0,
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap()
        .with_stderr(Box::new(sink.clone()));
        ipam.status().unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 200_000);
    }

    // Debian's containernetworking-plugins (/usr/lib/cni) or the upstream layout (/opt/cni/bin).
    const REAL_CNI_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

    #[test]
    fn real_host_local_allocates_checks_and_releases() {
        let dirs: Vec<PathBuf> = REAL_CNI_DIRS.iter().map(PathBuf::from).collect();
        let exe = find_plugin("host-local", &dirs).unwrap_or_else(|e| {
            panic!("{e}: install the containernetworking-plugins package to run this test")
        });
        let t = TempDir::new("hostlocal");
        let data = t.0.join("data");
        let _r = EXEC_LOCK.read().unwrap();

        let probe = Process::new(&exe)
            .env_clear()
            .env(CNI_COMMAND, "VERSION")
            .output()
            .unwrap();
        let info: Value = serde_json::from_slice(&probe.stdout).unwrap();
        let supported: Vec<&str> = info["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(supported.contains(&"1.0.0"), "{info}");

        let netconf = |version: &str| {
            NetConf::from_value(json!({
                "cniVersion": version,
                "name": "hl-test",
                "type": "netkit-cni",
                "ipam": {
                    "type": "host-local",
                    "dataDir": data.to_str().unwrap(),
                    "ranges": [[{"subnet": "10.254.7.0/29"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }))
            .unwrap()
        };
        let env_for = |ctr: &str| {
            let mut e = env(Path::new(REAL_CNI_DIRS[0]));
            for (k, v) in &mut e {
                match k.as_str() {
                    "CNI_CONTAINERID" => *v = ctr.to_owned(),
                    "CNI_NETNS" => *v = format!("/var/run/netns/{ctr}"),
                    _ => {}
                }
            }
            e
        };
        let conf = netconf("1.0.0");
        let a = Ipam::new(&conf, &dirs, env_for("ctr-a")).unwrap();
        let b = Ipam::new(&conf, &dirs, env_for("ctr-b")).unwrap();

        let ra = a.add().unwrap();
        let rb = b.add().unwrap();
        assert_eq!(ra.ips.len(), 1);
        let ip_a = ra.ips[0].address;
        assert_eq!(ip_a.prefix_len(), 29);
        assert_eq!(ra.ips[0].gateway, Some("10.254.7.1".parse().unwrap()));
        assert_eq!(ra.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_ne!(
            ip_a.addr(),
            rb.ips[0].address.addr(),
            "two containers, two addresses"
        );
        let lease_file = data.join("hl-test").join(ip_a.addr().to_string());
        let lease = std::fs::read_to_string(&lease_file).unwrap();
        assert!(lease.contains("ctr-a"), "{lease}");

        a.check().unwrap();
        a.del().unwrap();
        assert!(!lease_file.exists(), "DEL must release the address");
        a.del().unwrap(); // idempotent
        let cni: CniError = a.check().unwrap_err().into();
        assert!(
            cni.code > 0 && !cni.msg.is_empty(),
            "CHECK after DEL must fail: {cni:?}"
        );
        b.del().unwrap();

        // Error objects from the real plugin pass through with their code.
        let status = a.status();
        if supported.contains(&"1.1.0") {
            status.unwrap();
        } else {
            let cni: CniError = status.unwrap_err().into();
            assert_eq!(cni.code, 4, "{cni:?}");
            assert!(cni.msg.contains("STATUS"), "{}", cni.msg);
            let newer = Ipam::new(&netconf("1.1.0"), &dirs, env_for("ctr-c")).unwrap();
            let cni: CniError = newer.add().unwrap_err().into();
            assert_eq!(cni.code, 1, "{cni:?}");
            assert!(
                cni.details.contains("1.1.0") && cni.details.contains("host-local"),
                "{}",
                cni.details
            );
        }
    }
}
