//! Pure parts: latency histograms, throughput timelines, the results model and
//! the ratio table. No IO here, so it is unit-tested.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A thread-safe latency recorder in microseconds (1 µs .. 10 min, 3 digits).
pub struct Lat(Mutex<Histogram<u64>>);

impl Default for Lat {
    fn default() -> Self {
        Lat(Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")))
    }
}

impl Lat {
    pub fn record_us(&self, us: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(us.clamp(1, 600_000_000));
    }

    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).reset();
    }

    pub fn summary(&self) -> Summary {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Summary::of(&h)
    }
}

/// Percentiles of one latency distribution, in milliseconds, plus its CDF.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub n: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// (latency ms, fraction ≤ it), for the CDF plots.
    pub cdf: Vec<(f64, f64)>,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let mut cdf = Vec::new();
        for v in h.iter_quantiles(4) {
            cdf.push((ms(v.value_iterated_to()), v.quantile_iterated_to()));
        }
        Summary {
            n: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            cdf,
        }
    }

    /// Percentiles of plain samples (few of them: failovers, reassignments).
    pub fn of_samples(samples: &[Duration]) -> Summary {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        for s in samples {
            h.saturating_record((s.as_micros() as u64).clamp(1, 600_000_000));
        }
        Summary::of(&h)
    }
}

/// Completions per second over a run, from a shared counter sampled once a second.
#[derive(Default)]
pub struct Counter(pub AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-second rates from cumulative samples taken one second apart.
pub fn rates(cumulative: &[u64]) -> Vec<u64> {
    cumulative.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
}

/// Mean rate over the samples after `warmup` seconds (the sustained window).
pub fn sustained(cumulative: &[u64], warmup: usize) -> f64 {
    if cumulative.len() <= warmup + 1 {
        return 0.0;
    }
    let w = &cumulative[warmup..];
    (w[w.len() - 1] - w[0]) as f64 / (w.len() - 1) as f64
}

/// One throughput phase of one system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Lifecycles (submit, assign, complete) per second over the sustained window.
    pub tasks_per_s: f64,
    /// Completions in each second of the run, warm-up included.
    pub timeline: Vec<u64>,
    pub warmup_s: usize,
    pub submit: Summary,
    pub dispatch: Summary,
    pub end_to_end: Summary,
    /// Server CPU (user + system, all nodes) per 1,000 lifecycles.
    pub cpu_s_per_1k: f64,
    pub completed: u64,
    /// Attempts the workers lost (fenced or abandoned) although no worker
    /// was killed: false expiries. Baton only (from the SDK's WorkerStats).
    pub lost_attempts: u64,
}

/// Everything measured for one system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemResults {
    pub name: String,
    pub version: String,
    pub setup: String,
    /// One client, one request at a time, workers attached.
    pub single_client: Option<Latency1>,
    pub single_shard: Option<Phase>,
    pub hundred_shard: Option<Phase>,
    /// 100-shard load spread over 1,000 workers (Baton only): false expiries.
    pub many_workers: Option<Phase>,
    pub failover: Option<Summary>,
    pub reassignment: Option<Summary>,
    pub restart: Option<Restart>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency1 {
    pub submit: Summary,
    pub dispatch: Summary,
    pub end_to_end: Summary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Restart {
    pub tasks: u64,
    pub load_s: f64,
    pub rss_mib_per_node: Vec<f64>,
    pub first_commit_s: f64,
    pub all_queryable_s: f64,
    pub rss_mib_after_restart: Vec<f64>,
}

/// Which way a metric improves, for the ratio's meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Better {
    Higher,
    Lower,
}

/// One row of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub values: BTreeMap<String, Option<f64>>,
    #[serde(skip)]
    pub better: Better,
}

/// `baton / peer`, or None when either side is missing or zero.
pub fn ratio(baton: Option<f64>, peer: Option<f64>) -> Option<f64> {
    match (baton, peer) {
        (Some(b), Some(p)) if p >= 0.01 && b >= 0.01 && b.is_finite() && p.is_finite() => Some(b / p),
        _ => None,
    }
}

pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x >= 1000.0 => group(x.round() as u64),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) if x >= 0.01 => format!("{x:.2}"),
        Some(_) => "<0.01".into(),
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "—".into(),
        Some(x) if x >= 10.0 => format!("{x:.0}×"),
        Some(x) => format!("{x:.2}×"),
    }
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Build the comparison rows from the results of each system (Baton first).
pub fn rows(all: &[SystemResults]) -> Vec<Row> {
    fn row(
        all: &[SystemResults],
        metric: &str,
        unit: &str,
        better: Better,
        f: impl Fn(&SystemResults) -> Option<f64>,
    ) -> Row {
        Row {
            metric: metric.into(),
            unit: unit.into(),
            values: all.iter().map(|s| (s.name.clone(), f(s))).collect(),
            better,
        }
    }
    let nz = |v: f64| (v > 0.0).then_some(v);
    let mut out = vec![
        row(all, "throughput, 100-shard jobs", "tasks/s", Better::Higher, |s| {
            s.hundred_shard.as_ref().map(|p| p.tasks_per_s)
        }),
        row(all, "throughput, 1-shard jobs", "tasks/s", Better::Higher, |s| {
            s.single_shard.as_ref().map(|p| p.tasks_per_s)
        }),
    ];
    out.push(row(all, "throughput, 100-shard jobs, 1,000 workers", "tasks/s", Better::Higher, |s| {
        s.many_workers.as_ref().map(|p| p.tasks_per_s)
    }));
    for (label, pick) in [("p50", 0usize), ("p99", 1), ("p99.9", 2)] {
        let get = move |x: &Summary| nz([x.p50_ms, x.p99_ms, x.p999_ms][pick]);
        out.push(row(all, &format!("submit ack, 1 client, {label}"), "ms", Better::Lower, move |s| {
            s.single_client.as_ref().and_then(|l| get(&l.submit))
        }));
    }
    type PickSummary = fn(&SystemResults) -> Option<&Summary>;
    let kinds: [(&str, PickSummary); 6] = [
        ("dispatch, 1 client", |s| s.single_client.as_ref().map(|l| &l.dispatch)),
        ("end to end, 1 client", |s| s.single_client.as_ref().map(|l| &l.end_to_end)),
        ("submit ack at peak (100-shard)", |s| s.hundred_shard.as_ref().map(|p| &p.submit)),
        ("dispatch at peak (100-shard)", |s| s.hundred_shard.as_ref().map(|p| &p.dispatch)),
        ("failover", |s| s.failover.as_ref()),
        ("reassignment (2 s TTL)", |s| s.reassignment.as_ref()),
    ];
    for (name, pick) in kinds {
        for (label, q) in [("p50", 0usize), ("p99", 1)] {
            out.push(row(all, &format!("{name}, {label}"), "ms", Better::Lower, move |s| {
                pick(s).filter(|x| x.n > 0).and_then(|x| nz([x.p50_ms, x.p99_ms][q]))
            }));
        }
    }
    out.push(row(all, "server CPU per 1,000 lifecycles (100-shard)", "s", Better::Lower, |s| {
        s.hundred_shard.as_ref().and_then(|p| nz(p.cpu_s_per_1k))
    }));
    out.push(row(all, "server CPU per 1,000 lifecycles (1-shard)", "s", Better::Lower, |s| {
        s.single_shard.as_ref().and_then(|p| nz(p.cpu_s_per_1k))
    }));
    out
}

/// The ratio table as Markdown (also printed on stdout). The first system is
/// Baton; every other system gets a `Baton/<peer>` column.
pub fn table(all: &[SystemResults]) -> String {
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    let mut out = String::new();
    out.push_str("| measure | unit |");
    for n in &names {
        out.push_str(&format!(" {n} |"));
    }
    for n in names.iter().skip(1) {
        out.push_str(&format!(" {}/{n} |", names[0]));
    }
    out.push('\n');
    out.push_str(&"| --- ".repeat(2 + names.len() * 2 - 1));
    out.push_str("|\n");
    for r in rows(all) {
        let arrow = if r.better == Better::Higher { "↑" } else { "↓" };
        out.push_str(&format!("| {} | {} {arrow} |", r.metric, r.unit));
        for n in &names {
            out.push_str(&format!(" {} |", fmt_num(r.values.get(*n).copied().flatten())));
        }
        let b = r.values.get(names[0]).copied().flatten();
        for n in names.iter().skip(1) {
            out.push_str(&format!(" {} |", fmt_ratio(ratio(b, r.values.get(*n).copied().flatten()))));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_and_ratios_format() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(fmt_num(Some(25_431.4)), "25,431");
        assert_eq!(fmt_num(Some(0.456)), "0.46");
        assert_eq!(fmt_num(None), "—");
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(fmt_ratio(Some(38.46)), "38×");
        assert_eq!(fmt_ratio(Some(0.5)), "0.50×");
    }

    #[test]
    fn rates_and_sustained_window() {
        let cum = [0, 10, 30, 60, 100, 140];
        assert_eq!(rates(&cum), vec![10, 20, 30, 40, 40]);
        // After 2 s of warm-up: (140 - 30) / 3.
        assert!((sustained(&cum, 2) - 110.0 / 3.0).abs() < 1e-9);
        assert_eq!(sustained(&cum[..2], 2), 0.0);
    }

    #[test]
    fn histogram_percentiles_are_in_ms() {
        let l = Lat::default();
        for us in 1..=1000u64 {
            l.record_us(us * 10);
        }
        let s = l.summary();
        assert_eq!(s.n, 1000);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{}", s.p99_ms);
        assert!(s.cdf.last().unwrap().1 > 0.999);
        let f = Summary::of_samples(&[Duration::from_millis(400), Duration::from_millis(500)]);
        assert_eq!(f.n, 2);
        assert!(f.max_ms >= 499.0);
    }

    #[test]
    fn table_has_a_ratio_column_per_peer() {
        let mk = |name: &str, tput: f64| SystemResults {
            name: name.into(),
            hundred_shard: Some(Phase { tasks_per_s: tput, ..Default::default() }),
            ..Default::default()
        };
        let t = table(&[mk("Baton", 26_000.0), mk("etcd", 650.0), mk("NATS", 0.0)]);
        let header = t.lines().next().unwrap();
        assert!(header.contains("Baton/etcd") && header.contains("Baton/NATS"), "{header}");
        let line = t.lines().find(|l| l.starts_with("| throughput, 100-shard")).unwrap();
        assert!(line.contains("26,000") && line.contains("40×"), "{line}");
        // A zero or missing peer figure gives no ratio rather than infinity.
        assert!(line.ends_with("| — |"), "{line}");
    }
}
