//! Long options for the tools (`netkit-cni inspect`, `netkit-cni qemu-netdev`, `nkc-xsk`): one
//! small parser instead of one per tool. The CNI path never calls it: a CNI plugin takes its input
//! from the environment and stdin, and `VERSION` must not pay for anything else.
//!
//! `--name value` and `--name=value`; `-h`/`--help` anywhere asks for help. Each tool checks the
//! values itself; this only says which option was given with what.

/// One option a tool accepts: its name and, when it takes a value, what the value is (for
/// "needs an interface name").
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub value: Option<&'static str>,
}

impl Opt {
    /// An option that takes a value, described as e.g. "a path".
    pub const fn value(name: &'static str, what: &'static str) -> Opt {
        Opt {
            name,
            value: Some(what),
        }
    }

    /// An option that takes no value.
    pub const fn flag(name: &'static str) -> Opt {
        Opt { name, value: None }
    }
}

/// What went wrong, naming the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// Not one of the tool's options (or not an option at all).
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} needs {1}")]
    MissingValue(&'static str, &'static str),
    #[error("{0} given twice")]
    Twice(&'static str),
    /// `--flag=value` for an option that takes no value (the whole argument).
    #[error("{0} takes no value")]
    NoValueAllowed(String),
    #[error("{0}: empty value")]
    Empty(&'static str),
}

impl UsageError {
    /// The argument at fault, as the user typed it (or the option's name).
    pub fn arg(&self) -> &str {
        match self {
            UsageError::Unknown(a) | UsageError::NoValueAllowed(a) => a,
            UsageError::MissingValue(n, _) | UsageError::Twice(n) | UsageError::Empty(n) => n,
        }
    }

    /// What is wrong with [`UsageError::arg`], without naming it.
    pub fn why(&self) -> String {
        match self {
            UsageError::Unknown(_) => "unknown argument".into(),
            UsageError::MissingValue(_, what) => format!("needs {what}"),
            UsageError::Twice(_) => "given twice".into(),
            UsageError::NoValueAllowed(_) => "takes no value".into(),
            UsageError::Empty(_) => "empty value".into(),
        }
    }
}

/// The options given, in order; each at most once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `-h` or `--help` was given: the tool prints its usage and nothing else counts.
    pub help: bool,
    given: Vec<(&'static str, Option<String>)>,
}

impl Parsed {
    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether `name` (a flag or an option) was given.
    pub fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == name)
    }
}

/// Parses `args` against `opts`. The first problem is the error.
pub fn parse<S: AsRef<str>>(args: &[S], opts: &[Opt]) -> Result<Parsed, UsageError> {
    let mut out = Parsed::default();
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (arg, None),
        };
        if matches!(name, "-h" | "--help") && inline.is_none() {
            out.help = true;
            return Ok(out);
        }
        let Some(opt) = opts.iter().find(|o| o.name == name) else {
            return Err(UsageError::Unknown(arg.to_string()));
        };
        let value = match (opt.value, inline) {
            (None, Some(_)) => return Err(UsageError::NoValueAllowed(arg.to_string())),
            (None, None) => None,
            (Some(_), Some(v)) => Some(v),
            (Some(what), None) => Some(it.next().ok_or(UsageError::MissingValue(opt.name, what))?),
        };
        if value == Some("") {
            return Err(UsageError::Empty(opt.name));
        }
        if out.has(opt.name) {
            return Err(UsageError::Twice(opt.name));
        }
        out.given.push((opt.name, value.map(str::to_string)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: &[Opt] = &[
        Opt::flag("--json"),
        Opt::value("--master", "an interface name"),
    ];

    #[test]
    fn values_inline_or_next_and_flags() {
        let p = parse(&["--json", "--master", "eth0"], OPTS).unwrap();
        assert!(p.has("--json") && !p.help);
        assert_eq!(p.get("--master"), Some("eth0"));
        let p = parse(&["--master=a=b"], OPTS).unwrap();
        assert_eq!(p.get("--master"), Some("a=b"));
        assert!(parse(&["--master", "x", "--help"], OPTS).unwrap().help);
    }

    #[test]
    fn each_problem_names_the_argument() {
        for (args, want) in [
            (&["--bogus"][..], UsageError::Unknown("--bogus".into())),
            (&["eth0"][..], UsageError::Unknown("eth0".into())),
            (
                &["--master"][..],
                UsageError::MissingValue("--master", "an interface name"),
            ),
            (&["--master="][..], UsageError::Empty("--master")),
            (&["--json", "--json"][..], UsageError::Twice("--json")),
            (
                &["--json=yes"][..],
                UsageError::NoValueAllowed("--json=yes".into()),
            ),
        ] {
            assert_eq!(parse(args, OPTS), Err(want), "{args:?}");
        }
        assert_eq!(
            UsageError::MissingValue("--queue", "a value").to_string(),
            "--queue needs a value"
        );
    }
}
