//! The human-readable form of a [`Report`].

use std::fmt::Write;

use super::*;
use crate::logging::escaped;

/// A value as text output shows it: names, paths and warnings may come from what a pod wrote
/// (device-info file names, bpffs entries, device aliases), so every control and bidi/format
/// character is escaped (`--json` escapes them as JSON does).
fn t(v: impl std::fmt::Display) -> String {
    escaped(&v.to_string())
}

/// Printed under a queue table with queues steered to pods: what a DPDK application in such a
/// pod has to do. DPDK's AF_XDP PMD asks the interface for its channels (`ETHTOOL_GCHANNELS`,
/// `xdp_get_channels_info` in drivers/net/af_xdp/rte_eth_af_xdp.c) and refuses a `queue_count`
/// above the combined count; netkit has no `get_channels` (drivers/net/netkit.c), so it sees 1.
pub const DPDK_NOTE: &str = "  DPDK (AF_XDP PMD): one single-queue port per leased queue (queue_count=1, start_queue=VQUEUE): netkit reports no channels\n";

/// Render the report as text: one block per NIC, with a table of its RX queues.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    if r.nics.is_empty() {
        out.push_str(
            "no NIC in this network namespace has leased RX queues or a netkit-cni dispatcher\n",
        );
    }
    for (i, nic) in r.nics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_nic(&mut out, nic);
    }
    if !r.warnings.is_empty() {
        out.push('\n');
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {}", t(w));
    }
    out
}

fn render_nic(out: &mut String, nic: &NicReport) {
    let queues = match nic.rx_queues {
        Some(1) => "1 RX queue".to_string(),
        Some(n) => format!("{n} RX queues"),
        None => "RX queues unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "NIC {} (ifindex {}, {}, {queues})",
        t(&nic.name),
        nic.ifindex,
        if nic.up { "up" } else { "down" }
    );
    let _ = writeln!(
        out,
        "  netns cookie {}, bpffs dir {}",
        nic.netns_cookie,
        t(nic.bpffs_dir.display())
    );
    match &nic.xdp {
        Some(x) => {
            let _ = writeln!(
                out,
                "  XDP: {} mode, program {}",
                mode(x.mode),
                opt(x.prog_id)
            );
        }
        None => out.push_str("  XDP: none\n"),
    }
    match &nic.dispatcher {
        Some(d) => {
            let _ = writeln!(
                out,
                "  dispatcher: XDP link {}, program {}, {}, statistics {}",
                d.link_id,
                d.program_id,
                d.mode
                    .map(|m| format!("{} mode", mode(m)))
                    .unwrap_or_else(|| "mode unknown".into()),
                if d.stats { "on" } else { "off" }
            );
            for (i, p) in d.pins.iter().enumerate() {
                let kind = match p.kind {
                    PinKind::Link => "link",
                    PinKind::Map => "map",
                };
                let _ = writeln!(
                    out,
                    "  {:<12}{} ({kind} {})",
                    if i == 0 { "pinned:" } else { "" },
                    t(&p.path),
                    opt(p.id)
                );
            }
        }
        None => out.push_str("  dispatcher: none\n"),
    }
    if let Some(h) = &nic.host_routing {
        let _ = writeln!(
            out,
            "  host routing: tcx ingress program {}, {} pod(s), {} address(es) ({})",
            opt(h.ingress_prog_id),
            h.pods,
            h.addresses,
            t(h.dir.display())
        );
    }
    if let Some(st) = &nic.steering {
        let _ = writeln!(
            out,
            "  steering: default RSS context over queues {}",
            st.default_queues
                .as_ref()
                .map(|q| format!("{q:?}"))
                .unwrap_or_else(|| "(RSS not readable)".into())
        );
        for c in &st.contexts {
            let _ = writeln!(out, "    RSS context {} over queues {:?}", c.id, c.queues);
        }
        for p in &st.pods {
            let ctx = p
                .context
                .map(|c| format!(", context {c}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {}/{} ({}): match {}{ctx}",
                p.container_id, p.ifname, p.network, p.match_on
            );
            for r in &p.rules {
                let state = match &r.live {
                    Some(l) if *l == r.rule => "present".to_string(),
                    Some(l) => format!("NIC has {l}"),
                    None => "missing".to_string(),
                };
                let _ = writeln!(out, "      rule {}: {} [{state}]", r.location, r.rule);
            }
        }
    }
    if nic.queues.is_empty() {
        out.push_str("  no RX queues reported\n");
    } else {
        let mut rows = vec![[
            "QUEUE",
            "STATE",
            "CONTAINER",
            "IFNAME",
            "NETWORK",
            "PAIRING",
            "CONSUMER",
            "IFINDEX",
            "NSID",
            "VQUEUE",
            "DISPATCHER",
        ]
        .map(String::from)
        .to_vec()];
        for q in &nic.queues {
            rows.push(queue_row(q));
        }
        table(out, "  ", &rows);
        if nic
            .queues
            .iter()
            .any(|q| q.dispatch.as_ref().is_some_and(|d| d.action == Action::Pod))
        {
            out.push_str(DPDK_NOTE);
        }
    }
    for w in &nic.warnings {
        let _ = writeln!(out, "  warning: {}", t(w));
    }
}

fn queue_row(q: &QueueReport) -> Vec<String> {
    let mut state = match q.state {
        QueueState::Free => "free".to_string(),
        QueueState::Leased if q.lease.as_ref().and_then(|l| l.owner_verified) == Some(false) => {
            "leased (owner unverified)".to_string()
        }
        QueueState::Leased => "leased".to_string(),
        QueueState::Foreign => "leased (not netkit-cni)".to_string(),
    };
    if !q.busy.is_empty() {
        let _ = write!(state, " [{}]", q.busy.join(","));
    }
    let l = q.lease.as_ref();
    let s = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
    vec![
        q.id.to_string(),
        state,
        s(l.and_then(|l| l.container_id.as_ref())),
        s(l.and_then(|l| l.ifname.as_ref())),
        s(l.and_then(|l| l.network.as_ref())),
        l.and_then(|l| l.pairing)
            .map(|p| match p {
                Pairing::Pair => "pair",
                Pairing::Single => "single",
            })
            .unwrap_or("-")
            .to_string(),
        s(l.and_then(|l| l.consumer.as_ref())),
        l.map(|l| l.ifindex.to_string())
            .unwrap_or_else(|| "-".into()),
        l.map(|l| {
            l.netns_id
                .map(|n| n.to_string())
                .unwrap_or_else(|| "self".into())
        })
        .unwrap_or_else(|| "-".into()),
        l.map(|l| l.vqueue.to_string())
            .unwrap_or_else(|| "-".into()),
        q.dispatch
            .as_ref()
            .map(dispatch)
            .unwrap_or_else(|| "-".into()),
    ]
}

fn dispatch(d: &DispatchReport) -> String {
    let mut s = action(d.action).to_string();
    if d.action == Action::Pod {
        let _ = write!(s, " vq {} xskmap {}", opt(d.vqueue), opt(d.xskmap_id));
        if let Some(p) = &d.pod {
            let _ = write!(s, " ({})", t(p));
        }
    }
    if d.range_action != d.action {
        let _ = write!(s, ", restores {}", action(d.range_action));
    }
    s
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Pass => "pass",
        Action::Drop => "drop",
        Action::Pod => "pod",
        Action::Program => "program",
    }
}

fn mode(m: XdpAttachMode) -> &'static str {
    match m {
        XdpAttachMode::Native => "native",
        XdpAttachMode::Generic => "generic",
        XdpAttachMode::Offload => "offload",
        XdpAttachMode::Multi => "multi",
    }
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// Left-aligned columns separated by two spaces, without trailing blanks.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escaped(c)).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
