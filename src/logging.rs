//! A small line logger. Stdout is the CNI result channel, so this logger has no way to write
//! there: its targets are the `logFile` (appended to) or stderr.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ordered by verbosity: a logger at `Info` emits `Error`, `Warn` and `Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// Quiet by default: the runtime runs the plugin for every pod and keeps its stderr.
    pub const DEFAULT: LogLevel = LogLevel::Warn;
    pub const ALL: [LogLevel; 4] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
    ];

    /// The config spelling (`error|warn|info|debug`).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }

    fn label(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
}

pub struct Logger {
    level: LogLevel,
    tag: String,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level)
            .field("tag", &self.tag)
            .finish()
    }
}

impl Logger {
    pub fn stderr(level: LogLevel) -> Logger {
        Self::to_writer(Box::new(io::stderr()), level)
    }

    /// Appends to `path`, creating it if needed. Several plugin processes run concurrently for
    /// different pods; O_APPEND plus one write per line keeps their lines whole.
    ///
    /// The name is first opened `O_PATH | O_NOFOLLOW` (no open handler of a device or FIFO
    /// runs, a symlink is not followed) and `fstat`ed through that handle: it must be a regular
    /// file with one link, owned by the plugin's uid, so neither a symlink nor a hard link to,
    /// say, a root 0600 file planted at the name is appended to, and a device node is never
    /// opened. Only then is the same inode reopened for writing through `/proc/self/fd`. A
    /// missing file is created `O_CREAT | O_EXCL | O_NOFOLLOW` (nothing planted there is
    /// written through) and gets the same checks.
    pub fn file(path: &Path, level: LogLevel) -> Result<Logger, LogError> {
        use std::os::fd::AsRawFd;
        let err = |source| LogError::Open {
            path: path.to_owned(),
            source,
        };
        let handle = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o640)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                {
                    // Another invocation created it first: check theirs like any other.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(path)
                        .map_err(err)?,
                    r => r.map_err(err)?,
                }
            }
            // O_PATH | O_NOFOLLOW opens a symlink itself; the type check below refuses it.
            Err(e) => return Err(err(e)),
        };
        let st = nix::sys::stat::fstat(&handle).map_err(|e| err(io::Error::from(e)))?;
        let kind = st.st_mode & libc::S_IFMT;
        let me = nix::unistd::geteuid().as_raw();
        if kind == libc::S_IFLNK {
            return Err(err(io::Error::other("a symbolic link, not a regular file")));
        }
        if kind != libc::S_IFREG {
            return Err(err(io::Error::other("not a regular file")));
        }
        #[allow(clippy::useless_conversion)]
        if u64::from(st.st_nlink) != 1 {
            return Err(err(io::Error::other(format!(
                "it has {} hard links (a link to another file?), not 1",
                st.st_nlink
            ))));
        }
        if st.st_uid != me {
            return Err(err(io::Error::other(format!(
                "it is owned by uid {}, not {me}",
                st.st_uid
            ))));
        }
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .map_err(err)?;
        Ok(Self::to_writer(Box::new(file), level))
    }

    /// Any sink; how tests capture output, and how a caller can redirect logs.
    pub fn to_writer(sink: Box<dyn Write + Send>, level: LogLevel) -> Logger {
        Logger {
            level,
            tag: String::new(),
            sink: Mutex::new(sink),
        }
    }

    /// `logFile` if set and openable, else stderr. A log file we cannot open must not fail the
    /// CNI operation itself, so the failure is reported on stderr and logging carries on there.
    pub fn file_or_stderr(path: Option<&Path>, level: LogLevel) -> Logger {
        match path.map(|p| Self::file(p, level)) {
            None => Self::stderr(level),
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                let l = Self::stderr(level);
                l.warn(format_args!("{e}; logging to stderr instead"));
                l
            }
        }
    }

    /// A prefix for every line (e.g. `ADD 3f6940ab/eth0`) so lines from concurrent invocations
    /// sharing one log file can be told apart.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Logger {
        self.tag = tag.into();
        self
    }

    pub fn level(&self) -> LogLevel {
        self.level
    }

    pub fn enabled(&self, level: LogLevel) -> bool {
        level <= self.level
    }

    /// Write failures are ignored: losing a log line is better than failing a pod's network setup.
    pub fn log(&self, level: LogLevel, msg: impl fmt::Display) {
        if !self.enabled(level) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = format!(
            "{} {} netkit-cni[{}]",
            format_timestamp(now.as_secs(), now.subsec_millis()),
            level.label(),
            std::process::id()
        );
        if !self.tag.is_empty() {
            line.push(' ');
            line.push_str(&self.tag);
        }
        line.push_str(": ");
        // One record per line, whatever the message contains (e.g. a delegate's multi-line
        // stderr), and no control character reaches the file: terminal escapes from CNI_NETNS,
        // ifnames or a delegate's output would act on whoever reads the log.
        escape_controls(&msg.to_string(), &mut line);
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.flush();
    }

    pub fn error(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Error, msg)
    }

    pub fn warn(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Warn, msg)
    }

    pub fn info(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Info, msg)
    }

    pub fn debug(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Debug, msg)
    }
}

/// Whether `c` is a Unicode format character (general category Cf: bidi embeddings, overrides
/// and isolates such as U+202E and U+2066, zero-width characters, the BOM, tags) or a line or
/// paragraph separator (U+2028, U+2029). None is visible; each can reorder or hide what a
/// terminal shows around it ("Trojan Source"). The list is Unicode 15's Cf, by range.
pub fn is_format(c: char) -> bool {
    matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
        | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff
        | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f)
}

/// Whether `c` must never reach a terminal as itself: a control character (C0, DEL, C1) or a
/// format character ([`is_format`]).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// Appends `s` to `out` with every control character (C0, DEL, C1) and every format character
/// ([`is_format`]: bidi overrides and isolates, zero-width characters) escaped: `\n`, `\r`, `\t`
/// as such, the rest as `\u{..}`. A backslash is left alone (it cannot start anything a terminal
/// acts on).
pub fn escape_controls(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
}

/// `s` with [`escape_controls`] applied: what text output (tables, messages) prints of a value
/// that a pod may have chosen.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_controls(s, &mut out);
    out
}

/// At most `max` characters of caller-supplied `s`, for echoing in an error or a log line; a
/// longer one is cut and says how long it was.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…({} bytes)", &s[..i], s.len()),
    }
}

/// RFC 3339 UTC with milliseconds, computed by hand to stay dependency-free (days-to-civil
/// conversion from Howard Hinnant's date algorithms).
fn format_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A clonable in-memory sink for tests that check what was written to a `Box<dyn Write>`
/// (this module's logs, a delegate's copied stderr).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buf(pub(crate) std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netkit-cni-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn level_parsing_and_order() {
        for l in LogLevel::ALL {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(LogLevel::parse("WARN"), None);
        assert_eq!(LogLevel::parse("trace"), None);
        assert!(LogLevel::Error < LogLevel::Warn && LogLevel::Info < LogLevel::Debug);
    }

    #[test]
    fn filters_by_level() {
        let buf = Buf::default();
        let log = Logger::to_writer(Box::new(buf.clone()), LogLevel::Info);
        log.debug("hidden");
        log.info("shown-info");
        log.warn("shown-warn");
        log.error("shown-error");
        let text = buf.text();
        assert!(!text.contains("hidden"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains(" INFO ") && text.contains(" WARN ") && text.contains(" ERROR "),
            "{text}"
        );
        assert!(!log.enabled(LogLevel::Debug) && log.enabled(LogLevel::Info));
    }

    #[test]
    fn line_format_tag_and_escaping() {
        let buf = Buf::default();
        let log =
            Logger::to_writer(Box::new(buf.clone()), LogLevel::Debug).with_tag("ADD abc/eth0");
        log.debug(format_args!("ipam said {}", "line1\nline2\r"));
        let text = buf.text();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.strip_suffix('\n').unwrap();
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        let expected = format!(
            "DEBUG netkit-cni[{}] ADD abc/eth0: ipam said line1\\nline2\\r",
            std::process::id()
        );
        assert_eq!(rest, expected);
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_timestamp(1_709_251_199, 999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            format_timestamp(4_102_444_800, 0),
            "2100-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn file_target_appends() {
        let dir = tempdir("append");
        let path = dir.join("cni.log");
        std::fs::write(&path, "existing\n").unwrap();
        Logger::file(&path, LogLevel::Info).unwrap().info("first");
        Logger::file(&path, LogLevel::Info).unwrap().warn("second");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "existing");
        assert!(
            lines[1].ends_with(": first") && lines[2].ends_with(": second"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unopenable_file_is_an_error_and_falls_back() {
        let dir = tempdir("fallback");
        // A directory cannot be opened for appending.
        let err = Logger::file(&dir, LogLevel::Info).unwrap_err();
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        // Its CNI error (code 5 naming logFile) is tested with the error object (cni::error).

        let log = Logger::file_or_stderr(Some(&dir), LogLevel::Debug);
        assert_eq!(log.level(), LogLevel::Debug);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_control_character_is_escaped() {
        let buf = Buf::default();
        let log = Logger::to_writer(Box::new(buf.clone()), LogLevel::Debug);
        // An ANSI clear-screen, a title-setting OSC, a BEL, a tab, DEL and a C1 CSI.
        log.info("netns /run/netns/\u{1b}[2J\u{1b}]0;owned\u{7}\tx\u{7f}\u{9b}31m done");
        let text = buf.text();
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.ends_with(r"netns /run/netns/\u{1b}[2J\u{1b}]0;owned\u{7}\tx\u{7f}\u{9b}31m done"),
            "{line}"
        );
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_saying_how_long() {
        assert_eq!(clip("0-3", 8), "0-3");
        let long = "0-65535,".repeat(1000);
        let c = clip(&long, 16);
        assert_eq!(c, format!("0-65535,0-65535,…({} bytes)", long.len()));
        // Never cuts inside a character.
        assert_eq!(clip("ééé", 2), "éé…(6 bytes)");
    }

    #[test]
    fn a_symlink_fifo_or_device_at_the_log_file_is_refused() {
        let dir = tempdir("hostile");
        let victim = dir.join("victim");
        std::fs::write(&victim, "root only\n").unwrap();
        let link = dir.join("cni.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(
            Logger::file(&link, LogLevel::Info).is_err(),
            "a symlink is not followed"
        );
        let log = Logger::file_or_stderr(Some(&link), LogLevel::Info);
        log.error("must not land in the victim");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        let fifo = dir.join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Logger::file(&f, LogLevel::Info).is_err());
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(5))
                .expect("opening a FIFO log must not block"),
            "a FIFO is refused"
        );
        let err = Logger::file(Path::new("/dev/null"), LogLevel::Info).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_hard_link_or_a_foreign_file_at_the_log_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("hardlink");
        let victim = dir.join("shadow");
        std::fs::write(&victim, "root only\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("cni.log");
        std::fs::hard_link(&victim, &link).unwrap();
        let err = Logger::file(&link, LogLevel::Info).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
        Logger::file_or_stderr(Some(&link), LogLevel::Info).error("must not land in the victim");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        // A file someone else owns (a pod's uid) is not the plugin's log.
        let foreign = dir.join("foreign.log");
        std::fs::write(&foreign, "").unwrap();
        nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        let err = Logger::file(&foreign, LogLevel::Info).unwrap_err();
        assert!(err.to_string().contains("owned by uid 1000"), "{err}");
        // The plugin's own file, created or appended to, still works.
        let own = dir.join("own.log");
        Logger::file(&own, LogLevel::Info).unwrap().error("one");
        Logger::file(&own, LogLevel::Info).unwrap().error("two");
        let text = std::fs::read_to_string(&own).unwrap();
        assert!(text.contains("one") && text.contains("two"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
