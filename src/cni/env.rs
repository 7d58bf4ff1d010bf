//! The `CNI_*` environment: command, attachment identity, extra args and the plugin search path.
//!
//! Parsing takes a lookup function rather than reading `std::env`, so the binary passes the real
//! environment and tests pass a map.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use super::error::CniError;
use crate::text::{kernel_isspace, render_str};

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_IFNAME: &str = "CNI_IFNAME";
pub const CNI_ARGS: &str = "CNI_ARGS";
pub const CNI_PATH: &str = "CNI_PATH";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Exact, upper-case match: the spec names the values and libcni never varies the case.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        [
            Command::Add,
            Command::Del,
            Command::Check,
            Command::Status,
            Command::Gc,
            Command::Version,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            CniError::invalid_env(
                format!("{CNI_COMMAND}={} is not a CNI command", render_str(s)),
                "expected one of ADD, DEL, CHECK, STATUS, GC, VERSION",
            )
        })
    }

    /// Which variables the command needs and which it reads at all. CNI_PATH is optional for
    /// ADD/DEL/CHECK/STATUS in the spec's text; we require it because this plugin delegates to
    /// IPAM on those commands and libcni always sets it.
    fn vars(self) -> VarRules {
        use Need::*;
        match self {
            Command::Add | Command::Check => VarRules {
                container_id: Required,
                netns: Required,
                ifname: Required,
                path: Required,
                args: Optional,
            },
            Command::Del => VarRules {
                container_id: Required,
                netns: Optional,
                ifname: Required,
                path: Required,
                args: Optional,
            },
            Command::Status | Command::Gc => VarRules {
                container_id: Ignored,
                netns: Ignored,
                ifname: Ignored,
                path: Required,
                args: Optional,
            },
            Command::Version => VarRules {
                container_id: Ignored,
                netns: Ignored,
                ifname: Ignored,
                path: Ignored,
                args: Ignored,
            },
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    /// Not part of this command's contract: not read, so a stale value cannot fail the command.
    Ignored,
}

struct VarRules {
    container_id: Need,
    netns: Need,
    ifname: Need,
    path: Need,
    args: Need,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` from the spec. Shared by container IDs and network names.
pub(crate) fn matches_spec_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Longest file name Linux filesystems take (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Longest path the kernel resolves, without the NUL (PATH_MAX - 1).
pub const PATH_MAX_LEN: usize = 4095;

/// A container ID that passed the spec's pattern. Other modules key on-disk state by it, so the
/// pattern (no `/`, cannot start with `.`) is what keeps it from escaping a state directory, and
/// the length limit (the spec sets none; runtimes use 64 hex digits) is what lets it name a file:
/// a longer one would only fail with ENAMETOOLONG halfway through an ADD.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let why = if !matches_spec_identifier(s) {
            r"must match ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$".to_owned()
        } else if s.len() > NAME_MAX {
            format!("must be at most {NAME_MAX} bytes, is {}", s.len())
        } else {
            return Ok(ContainerId(s.to_owned()));
        };
        Err(CniError::invalid_env(
            format!("{CNI_CONTAINERID}={} is invalid", render_str(s)),
            why,
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest name the kernel accepts: IFNAMSIZ (16) minus the NUL.
pub const IFNAME_MAX_LEN: usize = 15;

/// An interface name the kernel will accept (the rules of `dev_valid_name`), checked up front so
/// a bad name is a code-4 error naming CNI_IFNAME rather than an EINVAL from netlink later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let why = if s.is_empty() {
            Some("must not be empty".to_owned())
        } else if s.len() > IFNAME_MAX_LEN {
            Some(format!(
                "must be at most {IFNAME_MAX_LEN} bytes, is {}",
                s.len()
            ))
        } else if s == "." || s == ".." {
            Some("must not be \".\" or \"..\"".to_owned())
        } else if s.contains('/') || s.contains(':') {
            Some("must not contain '/' or ':'".to_owned())
        } else if s.chars().any(char::is_whitespace) || s.bytes().any(kernel_isspace) {
            Some(
                "must not contain whitespace (the kernel also counts byte 0xa0, e.g. inside \"à\")"
                    .to_owned(),
            )
        } else if s.chars().any(crate::logging::is_unsafe_char) {
            // The kernel would take them, but the name ends up in device-info file names, markers,
            // inspect tables and logs: an escape sequence or a bidi override must not ride along.
            Some(
                "must not contain control or format characters (C0, DEL, C1, U+202E, …)".to_owned(),
            )
        } else {
            None
        };
        match why {
            None => Ok(IfName(s.to_owned())),
            Some(why) => Err(CniError::invalid_env(
                format!("{CNI_IFNAME}={} is invalid", render_str(s)),
                why,
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `CNI_ARGS`: `K=V;K=V`. `IgnoreUnknown` is kept as a flag rather than applied here because only
/// the consumer knows which keys it understands (see [`CniArgs::check_known`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    raw: String,
    pairs: Vec<(String, String)>,
    ignore_unknown: bool,
}

impl CniArgs {
    pub const IGNORE_UNKNOWN: &'static str = "IgnoreUnknown";

    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        let mut ignore_unknown = false;
        // Empty segments (a trailing ';') are tolerated: they carry nothing and some runtimes
        // build the string by appending "K=V;".
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::invalid_env(
                    format!("{CNI_ARGS} has invalid pair {}", render_str(pair)),
                    "expected KEY=VALUE pairs separated by ';'",
                ));
            };
            if k.is_empty() {
                return Err(CniError::invalid_env(
                    format!("{CNI_ARGS} has invalid pair {}", render_str(pair)),
                    "key must not be empty",
                ));
            }
            if k == Self::IGNORE_UNKNOWN {
                ignore_unknown = parse_go_bool(v).ok_or_else(|| {
                    CniError::invalid_env(
                        format!(
                            "{CNI_ARGS} has invalid {}={}",
                            Self::IGNORE_UNKNOWN,
                            render_str(v)
                        ),
                        "expected a boolean (1, t, true, 0, f, false, ...)",
                    )
                })?;
            }
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(CniArgs {
            raw: raw.to_owned(),
            pairs,
            ignore_unknown,
        })
    }

    /// The string as received, for passing on to delegated plugins unchanged.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// All pairs in order, including `IgnoreUnknown`.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn ignore_unknown(&self) -> bool {
        self.ignore_unknown
    }

    /// The value of `key`; the last one wins if repeated, as with libcni's LoadArgs.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Fails (code 4, naming the key) on a key outside `known` unless `IgnoreUnknown` is set.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown {
            return Ok(());
        }
        match self
            .pairs
            .iter()
            .find(|(k, _)| k != Self::IGNORE_UNKNOWN && !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, v)) => Err(CniError::invalid_env(
                format!(
                    "{CNI_ARGS} has unknown key {} (value {})",
                    render_str(k),
                    render_str(v)
                ),
                format!("known keys: {known:?}; set IgnoreUnknown=1 to skip unknown keys"),
            )),
        }
    }
}

/// Go's strconv.ParseBool, since runtimes and users write IgnoreUnknown for Go plugins.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The validated `CNI_*` environment. After [`CniEnv::from_lookup`] succeeds, a variable the
/// command requires is `Some` (ADD/CHECK: container_id, netns, ifname; DEL: container_id, ifname)
/// and `path` is non-empty for every command but VERSION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<ContainerId>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    pub fn from_map<S: std::hash::BuildHasher>(
        vars: &HashMap<String, String, S>,
    ) -> Result<Self, CniError> {
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    /// Parses and validates the environment for the command it names. Missing required variables
    /// are all reported in one error so the runtime's operator fixes them in one go.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        Self::parse_vars(|k| Ok(get(k)))
    }

    /// [`Self::from_lookup`] for an environment of raw bytes, such as the process's own
    /// (`std::env::var_os`). A variable the command reads that is not UTF-8 is a code-4 error
    /// naming it: converting it lossily would turn it into a different interface name, netns
    /// path or container ID than the runtime meant, and act on that.
    pub fn from_os_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, CniError> {
        Self::parse_vars(|k| {
            get(k)
                .map(|v| {
                    v.into_string().map_err(|raw| {
                        CniError::invalid_env(
                            format!(
                                "{k}={} is not valid UTF-8",
                                render_str(&raw.to_string_lossy())
                            ),
                            "CNI variables must be UTF-8 text",
                        )
                    })
                })
                .transpose()
        })
    }

    fn parse_vars(
        get: impl Fn(&str) -> Result<Option<String>, CniError>,
    ) -> Result<Self, CniError> {
        // An empty value counts as unset: containerd passes CNI_NETNS="" on DEL after the
        // namespace is gone, and libcni's skel treats empty the same way.
        let get = |k: &str| get(k).map(|v| v.filter(|v| !v.is_empty()));

        let command = match get(CNI_COMMAND)? {
            Some(c) => Command::parse(&c)?,
            None => {
                return Err(CniError::invalid_env(
                    format!("required environment variable {CNI_COMMAND} is missing"),
                    "",
                ))
            }
        };
        let rules = command.vars();

        let fetch = |name: &'static str,
                     need: Need,
                     missing: &mut Vec<&'static str>|
         -> Result<Option<String>, CniError> {
            if need == Need::Ignored {
                return Ok(None);
            }
            let v = get(name)?;
            if v.is_none() && need == Need::Required {
                missing.push(name);
            }
            Ok(v)
        };
        let mut missing = Vec::new();
        let container_id = fetch(CNI_CONTAINERID, rules.container_id, &mut missing)?;
        let netns = fetch(CNI_NETNS, rules.netns, &mut missing)?;
        let ifname = fetch(CNI_IFNAME, rules.ifname, &mut missing)?;
        let path = fetch(CNI_PATH, rules.path, &mut missing)?;
        let args = fetch(CNI_ARGS, rules.args, &mut missing)?;
        if !missing.is_empty() {
            return Err(CniError::invalid_env(
                format!(
                    "required environment variables missing for {command}: {}",
                    missing.join(", ")
                ),
                "",
            ));
        }

        let container_id = container_id
            .as_deref()
            .map(ContainerId::parse)
            .transpose()?;
        let ifname = ifname.as_deref().map(IfName::parse).transpose()?;
        let netns = netns
            .map(|ns| {
                // Only what can be told from the string; whether it names a network namespace
                // is learnt when it is opened.
                let why = if !ns.starts_with('/') {
                    "must be an absolute path to a network namespace".to_owned()
                } else if ns.len() > PATH_MAX_LEN {
                    format!("must be at most {PATH_MAX_LEN} bytes, is {}", ns.len())
                } else {
                    return Ok(PathBuf::from(ns));
                };
                Err(CniError::invalid_env(
                    format!("{CNI_NETNS}={} is invalid", render_str(&ns)),
                    why,
                ))
            })
            .transpose()?;
        let raw_path = path.unwrap_or_default();
        let path: Vec<PathBuf> = raw_path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if path.is_empty() && rules.path == Need::Required {
            // Only separators, e.g. CNI_PATH=":": present but names no directory.
            return Err(CniError::invalid_env(
                format!("{CNI_PATH}={} names no directory", render_str(&raw_path)),
                "",
            ));
        }
        let args = CniArgs::parse(args.as_deref().unwrap_or_default())?;

        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn add_env() -> HashMap<String, String> {
        env(&[
            (CNI_COMMAND, "ADD"),
            (CNI_CONTAINERID, "3f6940ab5ab4"),
            (CNI_NETNS, "/var/run/netns/cni-1234"),
            (CNI_IFNAME, "eth0"),
            (
                CNI_ARGS,
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
            (CNI_PATH, "/opt/cni/bin::/usr/lib/cni"),
        ])
    }

    #[test]
    fn parses_full_add_environment() {
        let e = CniEnv::from_map(&add_env()).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id.unwrap().as_str(), "3f6940ab5ab4");
        assert_eq!(e.netns.unwrap(), PathBuf::from("/var/run/netns/cni-1234"));
        assert_eq!(e.ifname.unwrap().as_str(), "eth0");
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert!(e.args.ignore_unknown());
        assert_eq!(e.args.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(e.args.get("K8S_POD_NAMESPACE"), Some("default"));
        assert_eq!(e.args.get("missing"), None);
        assert_eq!(e.args.pairs().len(), 3);
        assert_eq!(
            e.args.as_str(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"
        );
    }

    #[test]
    fn every_command_parses() {
        for (s, c) in [
            ("ADD", Command::Add),
            ("DEL", Command::Del),
            ("CHECK", Command::Check),
            ("STATUS", Command::Status),
            ("GC", Command::Gc),
            ("VERSION", Command::Version),
        ] {
            assert_eq!(Command::parse(s).unwrap(), c);
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        let err = CniEnv::from_map(&env(&[])).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_COMMAND"), "{}", err.msg);

        for bad in ["add", "FOO", " ADD"] {
            let err = CniEnv::from_map(&env(&[(CNI_COMMAND, bad)])).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(
                err.msg.contains("CNI_COMMAND") && err.msg.contains(&format!("{bad:?}")),
                "{}",
                err.msg
            );
        }
    }

    #[test]
    fn add_and_check_report_all_missing_variables() {
        for cmd in ["ADD", "CHECK"] {
            let err = CniEnv::from_map(&env(&[(CNI_COMMAND, cmd)])).unwrap_err();
            assert_eq!(err.code, 4);
            for var in [CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH] {
                assert!(err.msg.contains(var), "{cmd}: {} lacks {var}", err.msg);
            }
            assert!(!err.msg.contains(CNI_ARGS), "{}", err.msg);
        }
    }

    #[test]
    fn del_needs_no_netns_and_treats_empty_as_absent() {
        let mut vars = add_env();
        vars.insert(CNI_COMMAND.into(), "DEL".into());
        vars.insert(CNI_NETNS.into(), String::new());
        let e = CniEnv::from_map(&vars).unwrap();
        assert_eq!(e.command, Command::Del);
        assert_eq!(e.netns, None);
        vars.remove(CNI_NETNS);
        assert_eq!(CniEnv::from_map(&vars).unwrap().netns, None);

        // A present netns is still validated on DEL.
        vars.insert(CNI_NETNS.into(), "relative/ns".into());
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_NETNS") && err.msg.contains("relative/ns"),
            "{}",
            err.msg
        );

        let err = CniEnv::from_map(&env(&[(CNI_COMMAND, "DEL")])).unwrap_err();
        assert!(
            err.msg.contains(CNI_CONTAINERID) && err.msg.contains(CNI_IFNAME),
            "{}",
            err.msg
        );
        assert!(
            err.msg.contains(CNI_PATH) && !err.msg.contains(CNI_NETNS),
            "{}",
            err.msg
        );
    }

    #[test]
    fn gc_and_status_need_only_path_and_ignore_attachment_vars() {
        for cmd in ["GC", "STATUS"] {
            let err = CniEnv::from_map(&env(&[(CNI_COMMAND, cmd)])).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(CNI_PATH), "{}", err.msg);
            assert!(!err.msg.contains(CNI_CONTAINERID), "{}", err.msg);

            // Invalid attachment variables do not matter to these commands.
            let e = CniEnv::from_map(&env(&[
                (CNI_COMMAND, cmd),
                (CNI_PATH, "/opt/cni/bin"),
                (CNI_CONTAINERID, "../bad"),
                (CNI_IFNAME, "way-too-long-interface-name"),
            ]))
            .unwrap();
            assert_eq!(e.container_id, None);
            assert_eq!(e.ifname, None);
            assert_eq!(e.path, vec![PathBuf::from("/opt/cni/bin")]);
        }
    }

    #[test]
    fn version_needs_nothing() {
        let e = CniEnv::from_map(&env(&[(CNI_COMMAND, "VERSION"), (CNI_ARGS, "garbage")])).unwrap();
        assert_eq!(e.command, Command::Version);
        assert!(e.path.is_empty());
        assert!(e.args.pairs().is_empty());
    }

    #[test]
    fn path_of_only_separators_is_rejected() {
        let mut vars = add_env();
        vars.insert(CNI_PATH.into(), "::".into());
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_PATH") && err.msg.contains("\"::\""),
            "{}",
            err.msg
        );
    }

    #[test]
    fn container_id_validation() {
        for ok in [
            "a",
            "0",
            "abc-DEF_1.2",
            "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
        ] {
            assert_eq!(ContainerId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "../etc", "a/b", ".hidden", "-x", "_x", "a b", "a\nb", "ab/..", "é",
        ] {
            let err = ContainerId::parse(bad).unwrap_err();
            assert_eq!(err.code, 4, "{bad:?}");
            assert!(err.msg.contains(CNI_CONTAINERID), "{}", err.msg);
            assert!(err.msg.contains(&format!("{bad:?}")), "{}", err.msg);
        }
        let mut vars = add_env();
        vars.insert(CNI_CONTAINERID.into(), "../../etc/passwd".into());
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("../../etc/passwd"), "{}", err.msg);
    }

    #[test]
    fn ifname_validation() {
        for ok in [
            "eth0",
            "net1",
            "a",
            "x".repeat(15).as_str(),
            "nk-1.2_3@",
            "ä",
        ] {
            assert_eq!(IfName::parse(ok).unwrap().as_str(), ok);
        }
        let sixteen = "x".repeat(16);
        for bad in [
            "",
            sixteen.as_str(),
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\u{0b}b",
            "a\u{a0}b",
            // Bytes c3 a0: no Unicode whitespace, but the kernel's isspace() refuses 0xa0.
            "eth\u{e0}",
            "\u{920}",
            // Control and format characters: an ANSI clear-screen, BEL, DEL, a C1 CSI, a bidi
            // override and isolate, a zero-width space.
            "e\u{1b}[2J",
            "e\u{7}",
            "e\u{7f}",
            "e\u{9b}",
            "e\u{202e}",
            "e\u{2066}",
            "e\u{200b}",
        ] {
            let err = IfName::parse(bad).unwrap_err();
            assert_eq!(err.code, 4, "{bad:?}");
            assert!(err.msg.contains(CNI_IFNAME), "{}", err.msg);
            assert!(err.msg.contains(&format!("{bad:?}")), "{}", err.msg);
        }
        // 15 bytes is the limit, not 15 characters.
        assert!(IfName::parse(&"é".repeat(8)).is_err());
    }

    #[test]
    fn container_id_and_netns_lengths_are_bounded() {
        let id = "c".repeat(NAME_MAX);
        assert_eq!(ContainerId::parse(&id).unwrap().as_str(), id);
        let err = ContainerId::parse(&"c".repeat(NAME_MAX + 1)).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.details.contains("at most 255 bytes"), "{}", err.details);
        assert!(
            err.msg.len() < 200,
            "the value is echoed cut short: {}",
            err.msg
        );

        let mut vars = add_env();
        let longest = format!("/{}", "n".repeat(PATH_MAX_LEN - 1));
        vars.insert(CNI_NETNS.into(), longest.clone());
        assert_eq!(
            CniEnv::from_map(&vars).unwrap().netns,
            Some(PathBuf::from(longest))
        );
        vars.insert(CNI_NETNS.into(), format!("/{}", "n".repeat(PATH_MAX_LEN)));
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains(CNI_NETNS) && err.details.contains("at most 4095 bytes"),
            "{err}"
        );
    }

    #[test]
    fn non_utf8_values_are_errors_only_where_read() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"eth\xff".to_vec());
        let vars: HashMap<String, OsString> = add_env()
            .into_iter()
            .map(|(k, v)| (k, OsString::from(v)))
            .collect();
        let mut with_bad = vars.clone();
        with_bad.insert(CNI_IFNAME.into(), bad());
        let err = CniEnv::from_os_lookup(|k| with_bad.get(k).cloned()).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_IFNAME=\"eth\u{fffd}\"") && err.msg.contains("UTF-8"),
            "{}",
            err.msg
        );
        // STATUS does not read CNI_IFNAME, so its bytes do not matter.
        with_bad.insert(CNI_COMMAND.into(), "STATUS".into());
        CniEnv::from_os_lookup(|k| with_bad.get(k).cloned()).unwrap();
        assert_eq!(
            CniEnv::from_os_lookup(|k| vars.get(k).cloned()).unwrap(),
            CniEnv::from_map(&add_env()).unwrap()
        );
    }

    #[test]
    fn netns_must_be_absolute() {
        let mut vars = add_env();
        vars.insert(CNI_NETNS.into(), "netns/x".into());
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_NETNS") && err.msg.contains("\"netns/x\""),
            "{}",
            err.msg
        );
    }

    #[test]
    fn cni_args_parsing() {
        let a = CniArgs::parse("A=1;B=x=y;;A=2;").unwrap();
        assert_eq!(a.pairs().len(), 3);
        assert_eq!(a.get("A"), Some("2"));
        assert_eq!(a.get("B"), Some("x=y"));
        assert!(!a.ignore_unknown());

        assert!(CniArgs::parse("").unwrap().pairs().is_empty());

        for bad in ["A", "A=1;B", "=v"] {
            let err = CniArgs::parse(bad).unwrap_err();
            assert_eq!(err.code, 4, "{bad}");
            assert!(err.msg.contains("CNI_ARGS"), "{}", err.msg);
        }
        let err = CniArgs::parse("A=1;junk").unwrap_err();
        assert!(err.msg.contains("\"junk\""), "{}", err.msg);

        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(
                CniArgs::parse(&format!("IgnoreUnknown={t}"))
                    .unwrap()
                    .ignore_unknown(),
                "{t}"
            );
        }
        for f in ["0", "f", "false", "FALSE"] {
            assert!(
                !CniArgs::parse(&format!("IgnoreUnknown={f}"))
                    .unwrap()
                    .ignore_unknown(),
                "{f}"
            );
        }
        let err = CniArgs::parse("IgnoreUnknown=yes").unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("IgnoreUnknown") && err.msg.contains("\"yes\""),
            "{}",
            err.msg
        );
    }

    #[test]
    fn cni_args_check_known_honours_ignore_unknown() {
        let a = CniArgs::parse("K8S_POD_NAME=p;FOO=bar").unwrap();
        a.check_known(&["K8S_POD_NAME", "FOO"]).unwrap();
        let err = a.check_known(&["K8S_POD_NAME"]).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("\"FOO\"") && err.msg.contains("\"bar\""),
            "{}",
            err.msg
        );

        let a = CniArgs::parse("IgnoreUnknown=true;FOO=bar").unwrap();
        a.check_known(&[]).unwrap();
        let a = CniArgs::parse("IgnoreUnknown=0").unwrap();
        a.check_known(&[]).unwrap();
    }

    #[test]
    fn invalid_cni_args_fail_env_parsing() {
        let mut vars = add_env();
        vars.insert(CNI_ARGS.into(), "noequals".into());
        let err = CniEnv::from_map(&vars).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_ARGS"), "{}", err.msg);
    }

    #[test]
    fn spec_identifier_matcher() {
        assert!(matches_spec_identifier("mynet"));
        assert!(matches_spec_identifier("a.b-c_d"));
        assert!(!matches_spec_identifier(""));
        assert!(!matches_spec_identifier(".a"));
        assert!(!matches_spec_identifier("a$"));
    }
}
