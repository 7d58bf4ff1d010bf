//! IPAM delegation (spec section 4): run the `ipam.type` plugin found in CNI_PATH with our
//! environment and the complete network config, and read back its result or error.
//!
//! IPAM plugins may lag behind us in spec version: Debian's host-local 1.1.1 speaks up to 1.0.0
//! and answers a 1.1.0 config with code 1. ADD/DEL/CHECK therefore fall back to the newest version
//! both sides speak when (and only when) the plugin rejects ours, and the 1.1-only verbs GC and
//! STATUS are not sent to a plugin that does not know them (see [`Delegation`]).

pub mod delegate;

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use crate::cni::env::CNI_COMMAND;
use crate::cni::{check_command_allowed, codes, CniError, CniResult, CniVersion, Command};
use crate::config::{ipam_type_problem, NetConf};
use crate::text::render_value;

/// The commands run on the IPAM plugin. Our own VERSION is never delegated (we answer it
/// ourselves); `Version` is only the probe asking the IPAM plugin which versions it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamOp {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl IpamOp {
    pub fn command(self) -> Command {
        match self {
            IpamOp::Add => Command::Add,
            IpamOp::Del => Command::Del,
            IpamOp::Check => Command::Check,
            IpamOp::Gc => Command::Gc,
            IpamOp::Status => Command::Status,
            IpamOp::Version => Command::Version,
        }
    }
}

impl fmt::Display for IpamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command().as_str())
    }
}

/// What became of a GC or STATUS request. Both verbs exist only since spec 1.1.0, so a plugin
/// that does not support 1.1.0 is not sent them: it would answer "unknown command" at best, and
/// a hand-written plugin that treats every non-ADD command as a release could free live
/// addresses. Callers log [`Delegation::NotForwarded`]; it is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegation {
    /// The IPAM plugin ran the command and succeeded.
    Forwarded,
    /// Not sent, because the plugin's `supportedVersions` (listed here) lack 1.1.0. For GC that
    /// is safe: such a plugin's addresses are released by the DEL that runtimes send for each
    /// attachment anyway. For STATUS, the plugin is taken as available: it has no way to say
    /// otherwise, and ADD will report any real problem.
    NotForwarded { plugin_versions: Vec<String> },
}

impl fmt::Display for Delegation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delegation::Forwarded => f.write_str("forwarded to the IPAM plugin"),
            Delegation::NotForwarded { plugin_versions } => write!(
                f,
                "not forwarded: the IPAM plugin supports cniVersion [{}], not {}",
                plugin_versions.join(", "),
                CniVersion::V1_1_0
            ),
        }
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
    #[error("IPAM plugin {plugin_type:?} gave an unusable VERSION answer: {reason}")]
    BadVersionInfo {
        plugin_type: String,
        reason: String,
        stdout: String,
    },
    /// The plugin rejected our version (code 1) on `op` and no older version could be used:
    /// it supports none we speak that allows `op`, or asking it failed (`reason` says which).
    #[error(
        "IPAM plugin {plugin_type:?} rejected cniVersion {version} on {op} and no older version \
         can be used: {reason}"
    )]
    NoCommonVersion {
        plugin_type: String,
        op: IpamOp,
        version: CniVersion,
        reason: String,
        rejection: CniError,
    },
    /// A caller bug: GC or STATUS under a config version that does not define them (the
    /// command layer refuses those before IPAM is reached).
    #[error("{op} cannot be delegated under cniVersion {version}")]
    NotAllowed { op: IpamOp, version: CniVersion },
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
            IpamError::BadVersionInfo { ref stdout, .. } => {
                let details = format!("stdout: {stdout:?}");
                CniError::decode(e.to_string(), details)
            }
            IpamError::NoCommonVersion {
                ref plugin_type,
                op,
                version,
                ref reason,
                ref rejection,
            } => {
                // Code 1 and the plugin's own words, so the operator sees both what it
                // said and why no retry could help.
                let details = format!(
                    "{reason}; IPAM plugin {plugin_type:?} said on {op}: {}",
                    rejection
                );
                CniError::incompatible_version(
                    format!("IPAM plugin {plugin_type:?} does not support cniVersion {version}"),
                    details,
                )
            }
            IpamError::NotAllowed { op, version } => CniError::incompatible_version(
                e.to_string(),
                format!(
                    "{op} requires cniVersion {} (config is {version})",
                    CniVersion::V1_1_0
                ),
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

/// A located IPAM plugin bound to one network config and environment: one per invocation of
/// our plugin, so what it learns about the IPAM plugin's versions is never stale for long.
pub struct Ipam {
    plugin_type: String,
    exe: PathBuf,
    env: Vec<(String, String)>,
    /// The config as given, kept to rewrite its `cniVersion` for a fallback.
    netconf: Value,
    /// `netconf` serialized once: what every first attempt sends.
    stdin: Vec<u8>,
    version: CniVersion,
    /// The older version chosen after the plugin rejected `version`. Later operations of the
    /// same invocation (a DEL cleaning up after a failed ADD) use it without asking again.
    fallback: Mutex<Option<CniVersion>>,
    /// The plugin's `supportedVersions`, asked at most once.
    plugin_versions: OnceLock<Vec<String>>,
    stderr: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for Ipam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipam")
            .field("plugin_type", &self.plugin_type)
            .field("exe", &self.exe)
            .field("version", &self.version)
            .field("fallback", &self.fallback_version())
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
    /// its `cniVersion`: the version we speak to the plugin unless it rejects it, and what an ADD
    /// result is read as when the plugin's output does not name its own version.
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
            netconf: netconf.clone(),
            version,
            fallback: Mutex::new(None),
            plugin_versions: OnceLock::new(),
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

    /// The older cniVersion this instance fell back to after the plugin rejected the config's,
    /// if it had to (for logging: results are converted back by the caller either way).
    pub fn fallback_version(&self) -> Option<CniVersion> {
        *self.fallback.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates addresses. The result is abbreviated (no interfaces): the caller assigns
    /// interface indexes, then merges it into its own result and writes that in its own version
    /// with [`CniResult::to_json`], whatever version the IPAM plugin answered in.
    pub fn add(&self) -> Result<CniResult, IpamError> {
        let (spoken, stdout) = self.run(IpamOp::Add)?;
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
            None => spoken,
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

    /// Forwards GC when the plugin supports 1.1.0; see [`Delegation`] for when it does not.
    pub fn gc(&self) -> Result<Delegation, IpamError> {
        self.run_1_1_verb(IpamOp::Gc)
    }

    /// Forwards STATUS when the plugin supports 1.1.0; see [`Delegation`] for when it does not.
    pub fn status(&self) -> Result<Delegation, IpamError> {
        self.run_1_1_verb(IpamOp::Status)
    }

    /// The plugin's `supportedVersions` from its VERSION answer (asked once per instance).
    pub fn plugin_versions(&self) -> Result<&[String], IpamError> {
        if let Some(v) = self.plugin_versions.get() {
            return Ok(v);
        }
        // The spec's VERSION input: just our version, so the plugin may tailor its answer.
        let stdin = serde_json::to_vec(&json!({ "cniVersion": self.version.as_str() }))
            .expect("serializing a serde_json::Value");
        let stdout = self.exec(IpamOp::Version, &stdin)?;
        let bad = |reason: String| IpamError::BadVersionInfo {
            plugin_type: self.plugin_type.clone(),
            reason,
            stdout: tail(&stdout),
        };
        let value: Value =
            serde_json::from_slice(&stdout).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = value
            .get("supportedVersions")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no supportedVersions list".to_owned()))?;
        let versions = list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| bad("supportedVersions has a non-string entry".to_owned()))?;
        Ok(self.plugin_versions.get_or_init(|| versions))
    }

    /// ADD, DEL or CHECK, with the version fallback. Returns the version the plugin was spoken
    /// to in (the one its output is in) and its stdout.
    ///
    /// The config goes out as-is first: with an up-to-date plugin that is the only exec, so the
    /// common case pays nothing for the fallback. Only a code-1 answer (incompatible version,
    /// which libcni's skel also gives for CHECK under a version it does not allow) makes us ask
    /// VERSION and retry once in the newest version both sides speak. Anything else the plugin
    /// says is its answer, passed on unchanged.
    fn run(&self, op: IpamOp) -> Result<(CniVersion, Vec<u8>), IpamError> {
        if let Some(v) = self.fallback_version() {
            return Ok((v, self.exec(op, &self.stdin_in(v))?));
        }
        let rejection = match self.exec(op, &self.stdin) {
            Ok(stdout) => return Ok((self.version, stdout)),
            Err(IpamError::Plugin { error, .. }) if error.code == codes::INCOMPATIBLE_VERSION => {
                error
            }
            Err(e) => return Err(e),
        };
        let v = self.older_version(op, rejection)?;
        // Remembered before the retry's outcome is known: the plugin's own VERSION answer is
        // what chose it, and re-negotiating for the next operation would choose the same.
        *self.fallback.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        Ok((v, self.exec(op, &self.stdin_in(v))?))
    }

    /// The newest version we speak, older than ours, that the plugin lists and that allows
    /// `op` (CHECK needs 0.4.0). "Older" because the plugin has just rejected ours: if it lists
    /// ours anyway, the code 1 was about something else and retrying cannot help.
    fn older_version(&self, op: IpamOp, rejection: CniError) -> Result<CniVersion, IpamError> {
        let none = |reason: String, rejection: CniError| IpamError::NoCommonVersion {
            plugin_type: self.plugin_type.clone(),
            op,
            version: self.version,
            reason,
            rejection,
        };
        let theirs = match self.plugin_versions() {
            Ok(v) => v,
            Err(e) => return Err(none(format!("asking it VERSION failed: {e}"), rejection)),
        };
        if theirs.iter().any(|t| t == self.version.as_str()) {
            return Err(IpamError::Plugin {
                plugin_type: self.plugin_type.clone(),
                op,
                error: rejection,
            });
        }
        CniVersion::SUPPORTED
            .into_iter()
            .rev()
            .filter(|v| *v < self.version && check_command_allowed(op.command(), *v).is_ok())
            .find(|v| theirs.iter().any(|t| t == v.as_str()))
            .ok_or_else(|| {
                none(
                    format!(
                        "it supports [{}]; we speak [{}] and {op} needs one of them",
                        theirs.join(", "),
                        CniVersion::SUPPORTED.map(CniVersion::as_str).join(", ")
                    ),
                    rejection,
                )
            })
    }

    /// The config with its `cniVersion` replaced and nothing else changed. A chained ADD's
    /// `prevResult` stays in our version's shape: between 1.1.0 and 1.0.0 (the fallback seen in
    /// practice) the result shapes differ only by optional fields older readers ignore.
    fn stdin_in(&self, version: CniVersion) -> Vec<u8> {
        if version == self.version {
            return self.stdin.clone();
        }
        let mut conf = self.netconf.clone();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("cniVersion".into(), json!(version.as_str()));
        }
        serde_json::to_vec(&conf).expect("serializing a serde_json::Value")
    }

    /// GC or STATUS: sent only to a plugin that lists 1.1.0, which costs a VERSION exec per
    /// invocation. Unlike ADD, trying first is not an option here: what an older plugin does
    /// with a command it does not know is exactly what we must not risk (see [`Delegation`]).
    fn run_1_1_verb(&self, op: IpamOp) -> Result<Delegation, IpamError> {
        if check_command_allowed(op.command(), self.version).is_err() {
            return Err(IpamError::NotAllowed {
                op,
                version: self.version,
            });
        }
        let theirs = self.plugin_versions()?;
        if !theirs.iter().any(|t| t == CniVersion::V1_1_0.as_str()) {
            return Ok(Delegation::NotForwarded {
                plugin_versions: theirs.to_vec(),
            });
        }
        self.exec(op, &self.stdin).map(|_| Delegation::Forwarded)
    }

    /// Runs the plugin once for `op` with `stdin` and returns its stdout on success.
    fn exec(&self, op: IpamOp, stdin: &[u8]) -> Result<Vec<u8>, IpamError> {
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
        let mut pipe = child.stdin.take().expect("stdin was piped");
        // Written from a second thread: a plugin that prints before it has read all its input
        // would otherwise deadlock against us once both pipe buffers fill.
        let (write_result, output) = std::thread::scope(|s| {
            let writer = s.spawn(move || pipe.write_all(stdin));
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
    use std::sync::RwLock;

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

    use crate::logging::Buf;

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

    /// The VERSION answer of a plugin that speaks every version we do.
    const VERSION_1_1: &str =
        r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#;

    /// A fake IPAM that records its environment and stdin per command, answers VERSION as a
    /// 1.1.0 plugin, and otherwise runs `tail`.
    fn recording_ipam(t: &TempDir, tail_body: &str) -> PathBuf {
        let rec = t.0.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let body = format!(
            "env > {rec}/env.$CNI_COMMAND\ncat > {rec}/stdin.$CNI_COMMAND\n\
             [ \"$CNI_COMMAND\" = VERSION ] && {{ echo '{VERSION_1_1}'; exit 0; }}\n{tail_body}",
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
        assert_eq!(ipam.gc().unwrap(), Delegation::Forwarded);
        assert_eq!(ipam.status().unwrap(), Delegation::Forwarded);
        assert_eq!(ipam.fallback_version(), None);
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
            &format!(
                r#"cat >/dev/null
[ "$CNI_COMMAND" = VERSION ] && {{ echo '{VERSION_1_1}'; exit 0; }}
echo '{{"cniVersion":"1.1.0","code":11,"msg":"range exhausted, retry","details":"pool 10.9.0.0/24"}}'
exit 1"#
            ),
        );
        let bin = t.0.join("bin");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.1.0", "busy-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        let calls: [(IpamOp, &dyn Fn() -> IpamError); 5] = [
            (IpamOp::Add, &|| ipam.add().unwrap_err()),
            (IpamOp::Del, &|| ipam.del().unwrap_err()),
            (IpamOp::Check, &|| ipam.check().unwrap_err()),
            (IpamOp::Gc, &|| ipam.gc().unwrap_err()),
            (IpamOp::Status, &|| ipam.status().unwrap_err()),
        ];
        for (op, call) in calls {
            let err = call();
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
            "cniVersion": "1.1.0", "name": "n", "type": "netkit-cni", "pairing": "single",
            "lease": {"master": "eth1"}
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
        ipam.del().unwrap();
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

        // GC and STATUS do not exist under a 1.0.0 config: refused without running anything.
        for err in [a.gc().unwrap_err(), a.status().unwrap_err()] {
            assert!(matches!(err, IpamError::NotAllowed { .. }), "{err:?}");
            assert_eq!(CniError::from(err).code, 1);
        }
        assert!(
            a.plugin_versions.get().is_none(),
            "no VERSION probe was needed"
        );
    }

    /// The supportedVersions host-local 1.1.1 reports (it answers 1.1.0 configs with code 1).
    const UP_TO_1_0: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

    /// A fake IPAM that logs `COMMAND stdin` per call to `rec/log`, answers VERSION with
    /// `supported`, rejects any other config version with code 1 as libcni's skel does, and
    /// answers ADD with one IPv4 address in the shape of the version it was asked in.
    fn versioned_ipam(t: &TempDir, name: &str, supported: &[&str]) -> PathBuf {
        let log = t.0.join("rec/log");
        std::fs::create_dir_all(t.0.join("rec")).unwrap();
        let quoted: Vec<String> = supported.iter().map(|v| format!("\"{v}\"")).collect();
        let body = format!(
            r#"input=$(cat)
printf '%s %s\n' "$CNI_COMMAND" "$input" >> {log}
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{{"cniVersion":"1.0.0","supportedVersions":[{list}]}}'
  exit 0
fi
v=$(printf '%s' "$input" | sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p')
case " {spaced} " in
  *" $v "*) ;;
  *) printf '{{"code":1,"msg":"incompatible CNI versions","details":"config is \\"%s\\""}}' "$v"; exit 1;;
esac
if [ "$CNI_COMMAND" = ADD ]; then
  case "$v" in 0.*) ipv=',"version":"4"';; *) ipv='';; esac
  printf '{{"cniVersion":"%s","ips":[{{"address":"10.9.0.7/24","gateway":"10.9.0.1"%s}}],"routes":[{{"dst":"0.0.0.0/0"}}],"dns":{{}}}}' "$v" "$ipv"
fi
exit 0"#,
            log = log.display(),
            list = quoted.join(","),
            spaced = supported.join(" "),
        );
        t.script("bin", name, &body);
        t.0.join("bin")
    }

    /// The fake's calls so far: (command, stdin as JSON).
    fn calls(t: &TempDir) -> Vec<(String, Value)> {
        std::fs::read_to_string(t.0.join("rec/log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (cmd, stdin) = l.split_once(' ').unwrap();
                (cmd.to_owned(), serde_json::from_str(stdin).unwrap())
            })
            .collect()
    }

    fn with_version(conf: &Value, v: &str) -> Value {
        let mut c = conf.clone();
        c["cniVersion"] = json!(v);
        c
    }

    #[test]
    fn add_falls_back_to_the_plugins_newest_version_and_converts_back() {
        for ours in CniVersion::SUPPORTED {
            let t = TempDir::new(&format!("fallback-{ours}"));
            let bin = versioned_ipam(&t, "old-ipam", UP_TO_1_0);
            let c = conf(ours.as_str(), "old-ipam");
            let _r = EXEC_LOCK.read().unwrap();
            let ipam = Ipam::new(&c, std::slice::from_ref(&bin), env(&bin)).unwrap();
            let r = ipam.add().unwrap();
            assert_eq!(r.ips[0].address.to_string(), "10.9.0.7/24", "{ours}");
            assert_eq!(r.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));

            // The caller writes the result in its own version, whatever the plugin spoke.
            let out = r.to_json(ours);
            assert_eq!(out["cniVersion"], ours.as_str());
            assert_eq!(out["ips"][0]["address"], "10.9.0.7/24");
            assert_eq!(
                out["ips"][0].get("version").is_some(),
                ours.has_ip_version_field(),
                "{ours}: {out}"
            );
            assert_eq!(CniResult::from_json(&out, ours).unwrap(), r);

            let log = calls(&t);
            if ours == CniVersion::V1_1_0 {
                assert_eq!(ipam.fallback_version(), Some(CniVersion::V1_0_0));
                assert_eq!(log.len(), 3, "{log:?}");
                assert_eq!(log[0], ("ADD".to_owned(), c.raw.clone()));
                assert_eq!(
                    log[1],
                    ("VERSION".to_owned(), json!({"cniVersion": "1.1.0"}))
                );
                // The retry differs from the config in cniVersion only.
                assert_eq!(log[2], ("ADD".to_owned(), with_version(&c.raw, "1.0.0")));
            } else {
                // A version the plugin speaks: one exec, no probe.
                assert_eq!(ipam.fallback_version(), None);
                assert_eq!(log, vec![("ADD".to_owned(), c.raw.clone())], "{ours}");
            }
        }
    }

    #[test]
    fn del_and_check_fall_back_and_reuse_the_negotiated_version() {
        let t = TempDir::new("fallback-del");
        let bin = versioned_ipam(&t, "old-ipam", UP_TO_1_0);
        let c = conf("1.1.0", "old-ipam");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(&c, std::slice::from_ref(&bin), env(&bin)).unwrap();
        ipam.del().unwrap();
        ipam.check().unwrap();
        ipam.del().unwrap();
        let old = with_version(&c.raw, "1.0.0");
        let expected = vec![
            ("DEL".to_owned(), c.raw.clone()),
            ("VERSION".to_owned(), json!({"cniVersion": "1.1.0"})),
            ("DEL".to_owned(), old.clone()),
            // Same invocation: no second rejection, no second probe.
            ("CHECK".to_owned(), old.clone()),
            ("DEL".to_owned(), old),
        ];
        assert_eq!(calls(&t), expected);
    }

    #[test]
    fn fallback_picks_the_newest_common_version_below_ours() {
        let t = TempDir::new("fallback-pick");
        // Lists a version we do not know (2.0.0) and an old one: 0.4.0 is the one to use.
        let bin = versioned_ipam(&t, "odd-ipam", &["0.2.0", "0.3.1", "0.4.0", "2.0.0"]);
        let c = conf("1.0.0", "odd-ipam");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(&c, std::slice::from_ref(&bin), env(&bin)).unwrap();
        let r = ipam.add().unwrap();
        assert_eq!(ipam.fallback_version(), Some(CniVersion::V0_4_0));
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.7/24");
        assert_eq!(calls(&t)[2].1["cniVersion"], "0.4.0");
        // Converted to the caller's 1.0.0: the 0.4.0-only ips[].version is gone.
        assert_eq!(r.to_json(CniVersion::V1_0_0)["ips"][0].get("version"), None);
    }

    #[test]
    fn no_retry_without_a_usable_older_version() {
        /// A fake that logs its commands, answers VERSION with `version_answer` and everything
        /// else with the error object `error`.
        fn fake(name: &str, version_answer: &str, error: &str) -> TempDir {
            let t = TempDir::new(&format!("fallback-{name}"));
            std::fs::create_dir_all(t.0.join("rec")).unwrap();
            t.script(
                "bin",
                name,
                &format!(
                    r#"cat >/dev/null; echo "$CNI_COMMAND {{}}" >> {log}
[ "$CNI_COMMAND" = VERSION ] && {{ echo '{version_answer}'; exit 0; }}
echo '{error}'; exit 1"#,
                    log = t.0.join("rec/log").display()
                ),
            );
            t
        }
        const REJECT: &str = r#"{"code":1,"msg":"incompatible CNI versions"}"#;
        // Only pre-0.3.0 versions in common: nothing we can read a result in.
        let ancient = TempDir::new("fallback-none");
        versioned_ipam(&ancient, "ancient", &["0.1.0", "0.2.0"]);
        // Claims our version yet says code 1: retrying in it again cannot help.
        let liar = fake(
            "liar",
            VERSION_1_1,
            r#"{"code":1,"msg":"prevResult too old"}"#,
        );
        let mute = fake("mute", "VERSION? never heard of it", REJECT);
        let busy = fake("busy", VERSION_1_1, r#"{"code":11,"msg":"try later"}"#);

        let _r = EXEC_LOCK.read().unwrap();
        let add_err = |t: &TempDir, ty: &str, version: &str| -> (IpamError, Vec<String>) {
            let bin = t.0.join("bin");
            let ipam =
                Ipam::new(&conf(version, ty), std::slice::from_ref(&bin), env(&bin)).unwrap();
            let err = ipam.add().unwrap_err();
            assert_eq!(ipam.fallback_version(), None);
            (err, calls(t).into_iter().map(|(c, _)| c).collect())
        };

        let (err, log) = add_err(&ancient, "ancient", "1.1.0");
        assert!(matches!(err, IpamError::NoCommonVersion { .. }), "{err:?}");
        assert_eq!(log, ["ADD", "VERSION"]);
        let cni: CniError = err.into();
        assert_eq!(cni.code, 1);
        assert!(
            cni.msg.contains("\"ancient\"") && cni.msg.contains("1.1.0"),
            "{}",
            cni.msg
        );
        assert!(
            cni.details.contains("[0.1.0, 0.2.0]")
                && cni.details.contains("incompatible CNI versions"),
            "{}",
            cni.details
        );

        let (err, log) = add_err(&liar, "liar", "1.1.0");
        assert!(
            matches!(&err, IpamError::Plugin { error, .. } if error.msg == "prevResult too old"),
            "{err:?}"
        );
        assert_eq!(log, ["ADD", "VERSION"]);

        // A VERSION probe that fails leaves the plugin's own code-1 answer standing.
        let (err, log) = add_err(&mute, "mute", "1.0.0");
        assert_eq!(log, ["ADD", "VERSION"]);
        let cni: CniError = err.into();
        assert_eq!(cni.code, 1);
        assert!(
            cni.details.contains("asking it VERSION failed")
                && cni.details.contains("incompatible CNI versions"),
            "{}",
            cni.details
        );

        // Errors other than code 1 are the plugin's answer: no probe.
        let (err, log) = add_err(&busy, "busy", "1.1.0");
        assert_eq!(CniError::from(err).code, 11);
        assert_eq!(log, ["ADD"]);
    }

    #[test]
    fn check_is_not_retried_in_a_version_without_check() {
        let t = TempDir::new("fallback-check");
        let bin = versioned_ipam(&t, "v03-ipam", &["0.3.0", "0.3.1"]);
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.0.0", "v03-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        let cni: CniError = ipam.check().unwrap_err().into();
        assert_eq!(cni.code, 1);
        assert!(cni.details.contains("CHECK needs"), "{}", cni.details);
        let log: Vec<String> = calls(&t).into_iter().map(|(c, _)| c).collect();
        assert_eq!(log, ["CHECK", "VERSION"]);
        // ADD still works through the same instance, in 0.3.1.
        ipam.add().unwrap();
        assert_eq!(ipam.fallback_version(), Some(CniVersion::V0_3_1));
    }

    #[test]
    fn gc_and_status_are_not_forwarded_to_a_pre_1_1_plugin() {
        let t = TempDir::new("gc-old");
        let bin = versioned_ipam(&t, "old-ipam", UP_TO_1_0);
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(
            &conf("1.1.0", "old-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        let expected = Delegation::NotForwarded {
            plugin_versions: UP_TO_1_0.iter().map(|v| v.to_string()).collect(),
        };
        assert_eq!(ipam.gc().unwrap(), expected);
        assert_eq!(ipam.status().unwrap(), expected);
        assert!(
            expected.to_string().contains("1.0.0]") && expected.to_string().contains("not 1.1.0"),
            "{expected}"
        );
        // Only the probe ran, once: the plugin never saw GC or STATUS.
        let log: Vec<String> = calls(&t).into_iter().map(|(c, _)| c).collect();
        assert_eq!(log, ["VERSION"]);
    }

    #[test]
    fn gc_and_status_are_forwarded_to_a_1_1_plugin() {
        let t = TempDir::new("gc-new");
        let all: Vec<&str> = CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect();
        let bin = versioned_ipam(&t, "new-ipam", &all);
        let c = conf("1.1.0", "new-ipam");
        let _r = EXEC_LOCK.read().unwrap();
        let ipam = Ipam::new(&c, std::slice::from_ref(&bin), env(&bin)).unwrap();
        assert_eq!(ipam.gc().unwrap(), Delegation::Forwarded);
        assert_eq!(ipam.status().unwrap(), Delegation::Forwarded);
        let expected = vec![
            ("VERSION".to_owned(), json!({"cniVersion": "1.1.0"})),
            ("GC".to_owned(), c.raw.clone()),
            ("STATUS".to_owned(), c.raw.clone()),
        ];
        assert_eq!(calls(&t), expected);

        // Under an older config the verbs do not exist; refused before any exec.
        let old = Ipam::new(
            &conf("1.0.0", "new-ipam"),
            std::slice::from_ref(&bin),
            env(&bin),
        )
        .unwrap();
        let cni: CniError = old.gc().unwrap_err().into();
        assert_eq!(cni.code, 1);
        assert!(
            cni.msg.contains("GC") && cni.msg.contains("1.0.0"),
            "{}",
            cni.msg
        );
        assert_eq!(calls(&t).len(), 3);
    }

    #[test]
    fn real_host_local_with_a_1_1_0_config() {
        let dirs: Vec<PathBuf> = REAL_CNI_DIRS.iter().map(PathBuf::from).collect();
        find_plugin("host-local", &dirs).unwrap_or_else(|e| {
            panic!("{e}: install the containernetworking-plugins package to run this test")
        });
        let t = TempDir::new("hostlocal11");
        let data = t.0.join("data");
        let conf = NetConf::from_value(json!({
            "cniVersion": "1.1.0",
            "name": "hl-11",
            "type": "netkit-cni",
            "ipam": {
                "type": "host-local",
                "dataDir": data.to_str().unwrap(),
                "ranges": [[{"subnet": "10.254.8.0/29"}]]
            }
        }))
        .unwrap();
        let mut e = env(Path::new(REAL_CNI_DIRS[0]));
        e.retain(|(k, _)| k != "CNI_ARGS");
        let _r = EXEC_LOCK.read().unwrap();

        // Each CNI command is its own invocation of our plugin, hence its own Ipam.
        let add = Ipam::new(&conf, &dirs, e.clone()).unwrap();
        let r = add.add().unwrap();
        let spoke_1_1 = add.plugin_versions().unwrap().iter().any(|v| v == "1.1.0");
        if !spoke_1_1 {
            assert_eq!(add.fallback_version(), Some(CniVersion::V1_0_0));
        }
        let ip = r.ips[0].address;
        assert_eq!((ip.prefix_len(), ip.is_ipv4()), (29, true));
        let out = r.to_json(CniVersion::V1_1_0);
        assert_eq!(out["cniVersion"], "1.1.0");
        assert_eq!(CniResult::from_json(&out, CniVersion::V1_1_0).unwrap(), r);

        let net_dir = data.join("hl-11");
        let lease = std::fs::read_to_string(net_dir.join(ip.addr().to_string())).unwrap();
        assert!(lease.contains("ctr-1"), "{lease}");

        let status = Ipam::new(&conf, &dirs, e.clone())
            .unwrap()
            .status()
            .unwrap();
        let gc = Ipam::new(&conf, &dirs, e.clone()).unwrap().gc().unwrap();
        let expected = if spoke_1_1 {
            Delegation::Forwarded
        } else {
            Delegation::NotForwarded {
                plugin_versions: add.plugin_versions().unwrap().to_vec(),
            }
        };
        assert_eq!((&status, &gc), (&expected, &expected));

        Ipam::new(&conf, &dirs, e.clone()).unwrap().del().unwrap();
        // Released: no file named after an address is left in the network's state directory.
        let left: Vec<String> = std::fs::read_dir(&net_dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        assert!(left.is_empty(), "allocations left after DEL: {left:?}");
    }
}
