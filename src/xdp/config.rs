//! Queue range actions: which physical queues the host keeps (pass), drops, or hands to an
//! admin XDP program, as configured per NIC.
//!
//! Configuration (JSON, e.g. inside the CNI network config):
//!
//! ```json
//! [ { "queues": "0-1", "action": "drop" },
//!   { "queues": "6",   "action": "program", "program": "/sys/fs/bpf/admin/xdp_fw" } ]
//! ```
//!
//! Queues not covered by any range pass to the host. A queue leased to a pod overrides its range
//! action while the lease lasts; giving the queue back restores the range action.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::error::XdpError;
use super::MAX_QUEUES;
use crate::bpf::pins::PLUGIN_DIR;

/// One configuration entry as written by the user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRangeConfig {
    /// `"N"` or `"N-M"` (inclusive), decimal physical queue ids.
    pub queues: String,
    /// What to do with the queues' frames.
    pub action: ActionName,
    /// For `program`: the bpffs pin of the XDP program to tail-call.
    #[serde(default)]
    pub program: Option<PathBuf>,
}

/// Action names accepted in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    /// Host stack.
    Pass,
    /// XDP_DROP.
    Drop,
    /// Tail call into an admin program.
    Program,
}

/// A validated range action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAction {
    /// Host stack.
    Pass,
    /// XDP_DROP.
    Drop,
    /// Tail call into the XDP program pinned at this path (inside bpffs); the host stack if the
    /// tail call fails.
    Program(PathBuf),
}

/// A validated range: queues `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRange {
    /// First queue.
    pub first: u32,
    /// Last queue (inclusive).
    pub last: u32,
    /// What the dispatcher does for them.
    pub action: RangeAction,
}

/// A validated set of ranges: within `0..MAX_QUEUES`, pairwise disjoint, sorted by first queue,
/// every program pin inside the bpffs mount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRanges {
    ranges: Vec<QueueRange>,
}

impl QueueRanges {
    /// No ranges: every queue passes to the host unless leased.
    pub fn all_pass() -> QueueRanges {
        QueueRanges::default()
    }

    /// Validate configuration entries. `bpffs` is the bpffs mount the dispatcher uses; program
    /// pins must lie inside it and outside the plugin's own directory.
    pub fn new(entries: &[QueueRangeConfig], bpffs: &Path) -> Result<QueueRanges, XdpError> {
        let mut ranges = Vec::with_capacity(entries.len());
        let mut origin = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let err = |reason: String| XdpError::InvalidConfig {
                entry: Some(i),
                reason,
            };
            let (first, last) = parse_queues(&e.queues).map_err(err)?;
            let action = match (e.action, &e.program) {
                (ActionName::Pass, None) => RangeAction::Pass,
                (ActionName::Drop, None) => RangeAction::Drop,
                (ActionName::Program, Some(p)) => {
                    RangeAction::Program(validate_program_pin(p, bpffs).map_err(err)?)
                }
                (ActionName::Program, None) => {
                    return Err(err(
                        "action \"program\" needs \"program\": <bpffs pin>".into()
                    ))
                }
                (a, Some(_)) => {
                    return Err(err(format!(
                        "\"program\" is only valid with action \"program\", not {a:?}"
                    )))
                }
            };
            ranges.push(QueueRange {
                first,
                last,
                action,
            });
            origin.push(i);
        }
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| ranges[i].first);
        for w in order.windows(2) {
            let (a, b) = (&ranges[w[0]], &ranges[w[1]]);
            if b.first <= a.last {
                let (ea, eb) = (
                    origin[w[0]].min(origin[w[1]]),
                    origin[w[0]].max(origin[w[1]]),
                );
                return Err(XdpError::InvalidConfig {
                    entry: Some(eb),
                    reason: format!(
                        "queues {}-{} overlap entry {ea} ({}-{})",
                        b.first, b.last, a.first, a.last
                    ),
                });
            }
        }
        let ranges = order.into_iter().map(|i| ranges[i].clone()).collect();
        Ok(QueueRanges { ranges })
    }

    /// Parse and validate a JSON list of [`QueueRangeConfig`].
    pub fn from_json(json: &str, bpffs: &Path) -> Result<QueueRanges, XdpError> {
        let entries: Vec<QueueRangeConfig> =
            serde_json::from_str(json).map_err(|e| XdpError::InvalidConfig {
                entry: None,
                reason: e.to_string(),
            })?;
        QueueRanges::new(&entries, bpffs)
    }

    /// The ranges, sorted by first queue.
    pub fn ranges(&self) -> &[QueueRange] {
        &self.ranges
    }

    /// The configured action of `queue` (pass when no range covers it).
    pub fn action_for(&self, queue: u32) -> &RangeAction {
        // Sorted and disjoint: the candidate is the last range starting at or before `queue`.
        let idx = self.ranges.partition_point(|r| r.first <= queue);
        match idx.checked_sub(1).map(|i| &self.ranges[i]) {
            Some(r) if queue <= r.last => &r.action,
            _ => &RangeAction::Pass,
        }
    }
}

/// `"N"` or `"N-M"` with `N <= M < MAX_QUEUES`; plain decimal digits only (no sign, spaces or
/// leading `+`), so that what the user wrote is exactly what applies.
fn parse_queues(s: &str) -> Result<(u32, u32), String> {
    let num = |t: &str| -> Result<u32, String> {
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "queues {s:?}: expected \"N\" or \"N-M\" with decimal queue ids"
            ));
        }
        let n: u32 = t
            .parse()
            .map_err(|_| format!("queues {s:?}: {t} out of range"))?;
        if n >= MAX_QUEUES {
            return Err(format!(
                "queues {s:?}: queue {n} out of range (the dispatcher handles 0..{MAX_QUEUES})"
            ));
        }
        Ok(n)
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if first > last {
        return Err(format!("queues {s:?}: first queue after last"));
    }
    Ok((first, last))
}

/// A program pin must be an absolute, normalised path strictly inside `bpffs` and not inside the
/// plugin's own directory (which holds only the plugin's objects). Checked lexically here; the
/// kernel then refuses anything that is not a pinned BPF object when the pin is opened.
fn validate_program_pin(pin: &Path, bpffs: &Path) -> Result<PathBuf, String> {
    if !bpffs.is_absolute() {
        return Err(format!("bpffs root {} is not absolute", bpffs.display()));
    }
    if !pin.is_absolute() {
        return Err(format!(
            "program pin {} is not an absolute path",
            pin.display()
        ));
    }
    // Checked on the raw bytes: `Path::components` silently drops inner `.` segments.
    if pin
        .as_os_str()
        .as_encoded_bytes()
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(format!(
            "program pin {} contains '.' or '..'",
            pin.display()
        ));
    }
    let root: PathBuf = bpffs.components().collect();
    let rel = match pin.strip_prefix(&root) {
        Ok(rel) if rel.components().next().is_some() => rel,
        _ => {
            return Err(format!(
                "program pin {} is outside the bpf file system {}",
                pin.display(),
                root.display()
            ))
        }
    };
    if rel.components().next() == Some(Component::Normal(PLUGIN_DIR.as_ref())) {
        return Err(format!(
            "program pin {} is inside the plugin's own directory",
            pin.display()
        ));
    }
    Ok(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(queues: &str, action: ActionName, program: Option<&str>) -> QueueRangeConfig {
        QueueRangeConfig {
            queues: queues.into(),
            action,
            program: program.map(PathBuf::from),
        }
    }

    fn bpffs() -> &'static Path {
        Path::new("/sys/fs/bpf")
    }

    fn reason(r: Result<QueueRanges, XdpError>) -> (Option<usize>, String) {
        match r {
            Err(XdpError::InvalidConfig { entry, reason }) => (entry, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn parses_single_queues_and_ranges() {
        assert_eq!(parse_queues("0"), Ok((0, 0)));
        assert_eq!(parse_queues("0-1"), Ok((0, 1)));
        assert_eq!(parse_queues("5-5"), Ok((5, 5)));
        assert_eq!(parse_queues("1023"), Ok((1023, 1023)));
        assert_eq!(parse_queues("0-1023"), Ok((0, 1023)));
    }

    #[test]
    fn rejects_malformed_queue_specs() {
        for bad in [
            "", "-", "1-", "-1", "a", "1-b", " 1", "1 ", "+1", "1-2-3", "0x1", "1,2", "１",
        ] {
            assert!(parse_queues(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_out_of_range_and_reversed() {
        assert!(parse_queues("1024").unwrap_err().contains("out of range"));
        assert!(parse_queues("0-1024").unwrap_err().contains("out of range"));
        assert!(parse_queues("99999999999")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_queues("3-2")
            .unwrap_err()
            .contains("first queue after last"));
    }

    #[test]
    fn sorts_ranges_and_answers_actions() {
        let r = QueueRanges::new(
            &[
                cfg("6-7", ActionName::Program, Some("/sys/fs/bpf/admin/fw")),
                cfg("0-1", ActionName::Drop, None),
                cfg("3", ActionName::Pass, None),
            ],
            bpffs(),
        )
        .unwrap();
        let firsts: Vec<u32> = r.ranges().iter().map(|r| r.first).collect();
        assert_eq!(firsts, [0, 3, 6]);
        assert_eq!(r.action_for(0), &RangeAction::Drop);
        assert_eq!(r.action_for(1), &RangeAction::Drop);
        assert_eq!(r.action_for(2), &RangeAction::Pass);
        assert_eq!(r.action_for(3), &RangeAction::Pass);
        assert_eq!(r.action_for(5), &RangeAction::Pass);
        assert_eq!(
            r.action_for(6),
            &RangeAction::Program("/sys/fs/bpf/admin/fw".into())
        );
        assert_eq!(
            r.action_for(7),
            &RangeAction::Program("/sys/fs/bpf/admin/fw".into())
        );
        assert_eq!(r.action_for(8), &RangeAction::Pass);
        assert_eq!(r.action_for(u32::MAX), &RangeAction::Pass);
        assert_eq!(QueueRanges::all_pass().action_for(0), &RangeAction::Pass);
    }

    #[test]
    fn rejects_overlaps_naming_the_later_entry() {
        let (entry, why) = reason(QueueRanges::new(
            &[
                cfg("0-3", ActionName::Drop, None),
                cfg("8", ActionName::Pass, None),
                cfg("3-4", ActionName::Pass, None),
            ],
            bpffs(),
        ));
        assert_eq!(entry, Some(2));
        assert!(why.contains("overlap entry 0"), "{why}");
        // Same queue twice, even with the same action, is an overlap.
        let (entry, _) = reason(QueueRanges::new(
            &[
                cfg("5", ActionName::Drop, None),
                cfg("5", ActionName::Drop, None),
            ],
            bpffs(),
        ));
        assert_eq!(entry, Some(1));
        // Adjacent is fine.
        assert!(QueueRanges::new(
            &[
                cfg("0-3", ActionName::Drop, None),
                cfg("4-5", ActionName::Drop, None)
            ],
            bpffs()
        )
        .is_ok());
    }

    #[test]
    fn program_field_must_match_action() {
        let (entry, why) = reason(QueueRanges::new(
            &[cfg("0", ActionName::Program, None)],
            bpffs(),
        ));
        assert_eq!(entry, Some(0));
        assert!(why.contains("needs"), "{why}");
        let (_, why) = reason(QueueRanges::new(
            &[cfg("0", ActionName::Drop, Some("/sys/fs/bpf/p"))],
            bpffs(),
        ));
        assert!(why.contains("only valid with action"), "{why}");
    }

    #[test]
    fn program_pins_must_stay_inside_bpffs() {
        let ok = |p: &str| QueueRanges::new(&[cfg("0", ActionName::Program, Some(p))], bpffs());
        assert!(ok("/sys/fs/bpf/fw").is_ok());
        assert!(ok("/sys/fs/bpf/admin/fw").is_ok());
        // Trailing slash on the root is normalised away.
        assert!(QueueRanges::new(
            &[cfg("0", ActionName::Program, Some("/sys/fs/bpf/fw"))],
            Path::new("/sys/fs/bpf/")
        )
        .is_ok());
        for bad in [
            "/tmp/fw",
            "/sys/fs/bpfx/fw",
            "/sys/fs/bpf",
            "/sys/fs/bpf/",
            "/sys/fs/bpf/../bpf2/fw",
            "/sys/fs/bpf/./fw",
            "sys/fs/bpf/fw",
            "fw",
            "/sys/fs/bpf/netkit-cni/netns1-if2/link",
        ] {
            assert!(ok(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let r = QueueRanges::from_json(
            r#"[{"queues":"0-1","action":"drop"},{"queues":"6","action":"program","program":"/sys/fs/bpf/fw"}]"#,
            bpffs(),
        )
        .unwrap();
        assert_eq!(r.ranges().len(), 2);
        assert_eq!(
            r.action_for(6),
            &RangeAction::Program("/sys/fs/bpf/fw".into())
        );
        for bad in [
            r#"[{"queues":"0","action":"redirect"}]"#,
            r#"[{"queues":"0","action":"drop","extra":1}]"#,
            r#"[{"action":"drop"}]"#,
            r#"{"queues":"0","action":"drop"}"#,
        ] {
            let (entry, _) = reason(QueueRanges::from_json(bad, bpffs()));
            assert_eq!(entry, None, "{bad}");
        }
    }
}
