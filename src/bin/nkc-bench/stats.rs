//! Percentiles, summaries and the report (goals met or not, informational rows) every section
//! writes to.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::cni::Call;

/// The `p` quantile of `v`, interpolated linearly between the two nearest ranks (numpy's
/// default): the p50 of an even count is the mean of the middle two, never the larger one (a
/// rounded rank made the "median" of two rounds their maximum).
pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let x = (v.len() as f64 - 1.0) * p;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn the_median_of_two_is_their_mean_and_quantiles_interpolate() {
        assert_eq!(pct(&mut [1.389, 1.193], 0.5), (1.389 + 1.193) / 2.0);
        assert_eq!(pct(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(pct(&mut [4.0], 0.99), 4.0);
        let mut v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(pct(&mut v, 0.99), 99.0);
        assert_eq!(pct(&mut [0.0, 10.0], 0.25), 2.5);
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One figure of a list of calls.
pub(crate) fn of(calls: &[Call], f: impl Fn(&Call) -> f64) -> Vec<f64> {
    calls.iter().map(f).collect()
}

/// p50 and p99 of each figure (wall, CPU total, own CPU) of a list of calls, ms.
pub(crate) fn summary(calls: &[Call]) -> Value {
    let mut o = serde_json::Map::new();
    for (k, f) in [
        ("wall", (|c: &Call| c.wall) as fn(&Call) -> f64),
        ("cpu", |c| c.cpu),
        ("own", |c| c.own),
    ] {
        let mut v = of(calls, f);
        o.insert(format!("{k}_p50_ms"), json!(round3(pct(&mut v, 0.5))));
        o.insert(format!("{k}_p99_ms"), json!(round3(pct(&mut v, 0.99))));
    }
    Value::Object(o)
}

/// Goals comparing our calls with ptp's: `own` CPU at p50 (and p99 when `p99`), the totals and
/// wall times beside them as information.
pub(crate) fn compare(
    rep: &mut Report,
    key: &str,
    what: &str,
    ours: &[Call],
    ptp: &[Call],
    p99: bool,
) {
    let ratio = |f: fn(&Call) -> f64, q: f64| pct(&mut of(ours, f), q) / pct(&mut of(ptp, f), q);
    let qs: &[(&str, f64)] = if p99 {
        &[("p50", 0.5), ("p99", 0.99)]
    } else {
        &[("p50", 0.5)]
    };
    for (name, q) in qs {
        let k = format!("{key}_{name}_{what}");
        rep.goal(&k, ratio(|c| c.own, *q), "ratio", "<= 0.5", 0.5, true);
        let (cpu, wall) = (ratio(|c| c.cpu, *q), ratio(|c| c.wall, *q));
        rep.info(
            &format!("{k}_total"),
            json!({"cpu": round3(cpu), "wall": round3(wall)}),
            &format!("{cpu:.3} CPU incl. host-local, {wall:.3} wall: {key} {name} ÷ ptp's"),
        );
    }
}

/// The goals (top-level "ratios" in results.json) and the informational figures.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) ratios: serde_json::Map<String, Value>,
    pub(crate) rows: Vec<String>,
    pub(crate) info: serde_json::Map<String, Value>,
    pub(crate) info_rows: Vec<String>,
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A table cell: one line, no column separators.
pub(crate) fn cell(s: &str) -> String {
    s.replace('|', "/").replace('\n', " ")
}

impl Report {
    /// A measured goal: `value` (in `unit`) against `limit`, met when `value <= limit` (`le`) or
    /// `value >= limit`.
    pub(crate) fn goal(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        goal: &str,
        limit: f64,
        le: bool,
    ) {
        let met = value.is_finite() && if le { value <= limit } else { value >= limit };
        self.ratios.insert(
            name.into(),
            json!({"value": round3(value), "unit": unit, "goal": goal, "met": met}),
        );
        self.rows.push(format!(
            "| {name} | {value:.3} {unit} | {goal} | {} |",
            if met { "met" } else { "**not met**" }
        ));
    }

    /// A goal this run could not measure, and why. Never met.
    pub(crate) fn not_measured(&mut self, name: &str, wanted: &str, why: &str) {
        eprintln!("[bench] {name}: not measured: {why}");
        self.ratios.insert(name.into(), json!({"value": null, "goal": "not measured", "wanted": wanted, "met": false, "why": why}));
        self.rows.push(format!(
            "| {name} | not measured: {} | {wanted} | **not met** |",
            cell(why)
        ));
    }

    /// A figure without a goal.
    pub(crate) fn info(&mut self, name: &str, value: Value, text: &str) {
        self.info.insert(name.into(), value);
        self.info_rows.push(format!("| {name} | {} |", cell(text)));
    }
}

/// Run one of the sections that may fail on their own (a missing tool, a kernel refusing): its
/// goals become "not measured" with the error instead of ending the whole run.
pub(crate) fn section(
    name: &str,
    goals: &[(&str, &str)],
    secs: &mut serde_json::Map<String, Value>,
    rep: &mut Report,
    f: impl FnOnce(&mut Report) -> Result<()>,
) {
    eprintln!("[bench] {name}");
    let t = Instant::now();
    let mut sub = Report::default();
    match f(&mut sub) {
        Ok(()) => {
            rep.ratios.extend(sub.ratios);
            rep.rows.extend(sub.rows);
            rep.info.extend(sub.info);
            rep.info_rows.extend(sub.info_rows);
        }
        Err(e) => {
            for (goal, wanted) in goals {
                rep.not_measured(goal, wanted, &format!("{name} failed: {e:#}"));
            }
            if goals.is_empty() {
                eprintln!("[bench] {name} failed: {e:#}");
                rep.info(
                    &format!("{name}_error"),
                    json!(format!("{e:#}")),
                    &format!("failed: {e:#}"),
                );
            }
        }
    }
    secs.insert(name.into(), json!(t.elapsed().as_secs()));
    eprintln!("[bench] {name}: {:.0} s", t.elapsed().as_secs_f64());
}
