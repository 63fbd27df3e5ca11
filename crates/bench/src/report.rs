//! What a workload measured, and its three renderings: a plain table (stdout), one JSON object (`--json`)
//! and the per-second timeline as CSV (`--timeline`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{format_us, SecondRow, Summary};
use crate::sysstat::CpuReport;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ops`, `sessions`, `idle`, `expiry`, `watch`.
    pub workload: String,
    /// What ran, in a few words (`set, 32 sessions × 1 in flight, closed loop, 100 B values`).
    pub description: String,
    pub server: String,
    /// The root the workload's nodes lived under.
    pub root: Option<String>,
    /// Length of the measured window.
    pub window_s: f64,
    pub rates: Vec<Rate>,
    /// Latency figures in microseconds.
    pub latencies: Vec<Summary>,
    /// Other figures (counts, memory, times), each with its unit.
    pub figures: Vec<Figure>,
    /// Error replies and failures by kind; never left out.
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    pub cpu: CpuReport,
    /// Server memory (VmRSS) when `--server-pid` was given.
    pub server_rss_kib: Option<u64>,
    /// Latency per second of the main figure.
    pub timeline: Vec<SecondRow>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub name: String,
    pub count: u64,
    /// The time the count took (not always the measured window: `idle` counts its connects).
    pub seconds: f64,
    pub per_s: f64,
}

impl Rate {
    pub fn new(name: &str, count: u64, seconds: f64) -> Rate {
        Rate {
            name: name.to_string(),
            count,
            seconds,
            per_s: count as f64 / seconds.max(1e-9),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        }
    }
}

impl Report {
    /// The plain table printed on stdout.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}: {}", self.workload, self.description);
        let _ = writeln!(s, "  server      {}", self.server);
        if let Some(root) = &self.root {
            let _ = writeln!(s, "  root        {root}");
        }
        let _ = writeln!(s, "  window      {:.2}s", self.window_s);
        for r in &self.rates {
            let _ = writeln!(
                s,
                "  {:<22} {:.0}/s  ({} in {:.2}s)",
                r.name, r.per_s, r.count, r.seconds
            );
        }
        if !self.latencies.is_empty() {
            let _ = writeln!(
                s,
                "  {:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency", "count", "p50", "p99", "p99.9", "max", "mean"
            );
            for l in &self.latencies {
                let _ = writeln!(
                    s,
                    "  {:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    l.name,
                    l.count,
                    format_us(l.p50_us),
                    format_us(l.p99_us),
                    format_us(l.p999_us),
                    format_us(l.max_us),
                    format_us(l.mean_us.round() as u64),
                );
            }
        }
        for f in &self.figures {
            let line = format!("  {:<38} {} {}", f.name, trim_number(f.value), f.unit);
            let _ = writeln!(s, "{}", line.trim_end());
        }
        if self.error_total == 0 {
            let _ = writeln!(s, "  errors      0");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                s,
                "  ERRORS      {} ({})",
                self.error_total,
                list.join(", ")
            );
        }
        let _ = writeln!(s, "  cpu         {}", self.cpu.one_line());
        if let Some(rss) = self.server_rss_kib {
            let _ = writeln!(s, "  server rss  {:.1} MiB", rss as f64 / 1024.0);
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// `second,count,p50_us,p99_us,max_us`, one line per second of the measured window.
    pub fn timeline_csv(&self) -> String {
        let mut s = String::from("second,count,p50_us,p99_us,max_us\n");
        for r in &self.timeline {
            let _ = writeln!(
                s,
                "{},{},{},{},{}",
                r.second, r.count, r.p50_us, r.p99_us, r.max_us
            );
        }
        s
    }
}

/// `12`, `12.5`, `0.125`: as few digits as the value needs (at most three decimals).
fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            workload: "ops".into(),
            description: "get, 1 session × 1 in flight, closed loop".into(),
            server: "127.0.0.1:2181".into(),
            root: Some("/oxk-bench-1".into()),
            window_s: 2.0,
            rates: vec![Rate::new("requests", 2000, 2.0)],
            latencies: vec![Summary {
                name: "get".into(),
                count: 2000,
                p50_us: 120,
                p99_us: 450,
                p999_us: 1200,
                max_us: 15_000,
                mean_us: 130.2,
            }],
            figures: vec![Figure::new("server rss per session", 2.5, "KiB")],
            errors: BTreeMap::new(),
            error_total: 0,
            cpu: CpuReport {
                wall_s: 2.0,
                cores: 2,
                generator_cpu_s: 0.2,
                generator_pct: 10.0,
                machine_busy_pct: Some(80.0),
                server_cpu_s: None,
                server_pct: None,
                others_pct: Some(70.0),
            },
            server_rss_kib: None,
            timeline: vec![
                SecondRow {
                    second: 0,
                    count: 1000,
                    p50_us: 120,
                    p99_us: 440,
                    max_us: 900,
                },
                SecondRow {
                    second: 1,
                    count: 1000,
                    p50_us: 121,
                    p99_us: 460,
                    max_us: 15_000,
                },
            ],
            notes: vec![],
        }
    }

    #[test]
    fn table_shows_rate_percentiles_errors_and_cpu() {
        let t = sample().table();
        assert!(
            t.contains("requests               1000/s  (2000 in 2.00s)"),
            "{t}"
        );
        assert!(t.contains("120µs"), "{t}");
        assert!(t.contains("1.20ms"), "{t}");
        assert!(t.contains("15.0ms"), "{t}");
        assert!(t.contains("errors      0"), "{t}");
        assert!(t.contains("generator 10% (0.20s), machine 80% of 200% (others 70%)"));
        assert!(
            t.contains("server rss per session                 2.5 KiB\n"),
            "{t}"
        );
    }

    #[test]
    fn errors_are_shouted_in_the_table_and_counted_in_json() {
        let mut r = sample();
        r.errors.insert("NoNode".into(), 3);
        r.errors.insert("connection lost".into(), 1);
        r.error_total = 4;
        assert!(r
            .table()
            .contains("ERRORS      4 (NoNode 3, connection lost 1)"));
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("valid JSON");
        assert_eq!(v["error_total"], 4);
        assert_eq!(v["errors"]["NoNode"], 3);
        assert_eq!(v["latencies"][0]["p99_us"], 450);
        assert_eq!(v["timeline"][1]["max_us"], 15_000);
    }

    #[test]
    fn timeline_csv_has_one_line_per_second() {
        let csv = sample().timeline_csv();
        assert_eq!(
            csv,
            "second,count,p50_us,p99_us,max_us\n0,1000,120,440,900\n1,1000,121,460,15000\n"
        );
    }

    #[test]
    fn numbers_are_trimmed() {
        assert_eq!(trim_number(12.0), "12");
        assert_eq!(trim_number(12.5), "12.5");
        assert_eq!(trim_number(0.125), "0.125");
    }
}
