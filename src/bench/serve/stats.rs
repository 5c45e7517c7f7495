//! Per-level statistics: percentiles of the latencies, counts of failures by kind, rates
//! over the level's wall time, and the table printed at the end.

use std::collections::BTreeMap;

use serde::Serialize;

use super::measure::Sample;

/// The `p`th percentile (0–100) of `values`, linear between the closest ranks (numpy's
/// default); `None` for no values. NaNs are left out.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let rank = (p.clamp(0.0, 100.0) / 100.0) * last as f64;
    let lo = rank.floor() as usize;
    let hi = (rank.ceil() as usize).min(last);
    let (a, b) = (sorted[lo], sorted[hi]);
    Some(a + (b - a) * (rank - lo as f64))
}

/// Mean and percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dist {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Dist {
    /// From values in seconds; `None` when there are none.
    pub fn of_seconds(values: &[f64]) -> Option<Dist> {
        let ms: Vec<f64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| v * 1e3)
            .collect();
        Some(Dist {
            count: ms.len(),
            mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
            p50: percentile(&ms, 50.0)?,
            p90: percentile(&ms, 90.0)?,
            p99: percentile(&ms, 99.0)?,
        })
    }
}

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok(Sample),
    /// `kind` groups failures in the report: an HTTP status ("429", "500", …), "connect",
    /// "timeout", "read", "stream_error" (an error event), "bad_stream" (no `[DONE]`, bad
    /// JSON, no content).
    Failed {
        kind: String,
        message: String,
    },
}

/// One level (a concurrency, or an arrival rate) of the run.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// "closed" (concurrency) or "open" (Poisson arrivals).
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests sent.
    pub requests: usize,
    pub ok: usize,
    pub rate_limited_429: usize,
    /// Other failures, by kind (HTTP status or what went wrong).
    pub errors: BTreeMap<String, usize>,
    /// One message of each failure kind.
    pub error_examples: BTreeMap<String, String>,
    /// From the first request sent to the last one finished.
    pub seconds: f64,
    /// Finished requests (ok) per second.
    pub requests_per_s: f64,
    /// Searches answered per second (search runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searches_per_s: Option<f64>,
    /// Completion tokens of the ok requests.
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    /// Ok requests whose token count came from the usage chunk (the rest: chunks counted).
    pub tokens_from_usage: usize,
    pub ttft_ms: Option<Dist>,
    pub itl_ms: Option<Dist>,
    pub tpot_ms: Option<Dist>,
    pub e2e_ms: Option<Dist>,
}

/// Which level a report is of.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Closed(usize),
    Open(f64),
}

impl Level {
    pub fn label(self) -> String {
        match self {
            Level::Closed(c) => format!("C={c}"),
            Level::Open(r) => format!("{r} req/s"),
        }
    }
}

impl LevelReport {
    pub fn new(level: Level, outcomes: &[Outcome], seconds: f64, search: bool) -> Self {
        let mut errors = BTreeMap::new();
        let mut error_examples = BTreeMap::new();
        let mut rate_limited = 0;
        let mut samples = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Ok(s) => samples.push(s),
                Outcome::Failed { kind, message } => {
                    if kind == "429" {
                        rate_limited += 1;
                    } else {
                        *errors.entry(kind.clone()).or_insert(0) += 1;
                    }
                    error_examples
                        .entry(kind.clone())
                        .or_insert_with(|| message.clone());
                }
            }
        }
        let per_s = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        let output_tokens: u64 = samples.iter().map(|s| s.tokens).sum();
        let collect = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
            samples.iter().filter_map(|s| f(s)).collect()
        };
        let itl: Vec<f64> = samples.iter().flat_map(|s| s.itl.iter().copied()).collect();
        let (mode, concurrency, rate) = match level {
            Level::Closed(c) => ("closed", Some(c), None),
            Level::Open(r) => ("open", None, Some(r)),
        };
        LevelReport {
            mode,
            concurrency,
            rate,
            requests: outcomes.len(),
            ok: samples.len(),
            rate_limited_429: rate_limited,
            errors,
            error_examples,
            seconds,
            requests_per_s: per_s(samples.len() as f64),
            searches_per_s: search.then(|| per_s(samples.len() as f64)),
            output_tokens,
            output_tokens_per_s: per_s(output_tokens as f64),
            tokens_from_usage: samples.iter().filter(|s| s.tokens_from_usage).count(),
            ttft_ms: Dist::of_seconds(&collect(&|s| Some(s.ttft))),
            itl_ms: Dist::of_seconds(&itl),
            tpot_ms: Dist::of_seconds(&collect(&|s| s.tpot)),
            e2e_ms: Dist::of_seconds(&collect(&|s| Some(s.e2e))),
        }
    }

    pub fn label(&self) -> String {
        match (self.concurrency, self.rate) {
            (Some(c), _) => Level::Closed(c).label(),
            (None, Some(r)) => Level::Open(r).label(),
            (None, None) => "?".into(),
        }
    }

    /// Failures other than 429, e.g. "500×2 timeout×1", or "0".
    fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(k, n)| format!("{k}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn triple(d: &Option<Dist>, scale: f64, decimals: usize) -> String {
    match d {
        Some(d) => format!(
            "{:.*} / {:.*} / {:.*}",
            decimals,
            d.p50 * scale,
            decimals,
            d.p90 * scale,
            decimals,
            d.p99 * scale
        ),
        None => "–".into(),
    }
}

/// The report as a Markdown table (TTFT, ITL and TPOT in ms; E2E in s; p50 / p90 / p99).
pub fn table(levels: &[LevelReport], search: bool) -> String {
    let mut out = String::new();
    let rate_col = if search { "searches/s" } else { "req/s" };
    out.push_str(&format!(
        "| level | ok | 429 | errors | {rate_col} | out tok/s | TTFT ms p50/p90/p99 | ITL ms p50/p90/p99 | TPOT ms p50/p90/p99 | E2E s p50/p90/p99 |\n"
    ));
    out.push_str("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for l in levels {
        out.push_str(&format!(
            "| {} | {}/{} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} |\n",
            l.label(),
            l.ok,
            l.requests,
            l.rate_limited_429,
            l.errors_cell(),
            l.requests_per_s,
            l.output_tokens_per_s,
            triple(&l.ttft_ms, 1.0, 0),
            triple(&l.itl_ms, 1.0, 1),
            triple(&l.tpot_ms, 1.0, 1),
            triple(&l.e2e_ms, 1e-3, 2),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert!((percentile(&v, 50.0).unwrap() - 50.5).abs() < 1e-9);
        assert!((percentile(&v, 90.0).unwrap() - 90.1).abs() < 1e-9);
        assert!((percentile(&v, 99.0).unwrap() - 99.01).abs() < 1e-9);
        // Order does not matter; one value is every percentile; none is none.
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.5));
    }

    fn sample(ttft: f64, e2e: f64, tokens: u64) -> Outcome {
        Outcome::Ok(Sample {
            ttft,
            e2e,
            itl: vec![0.01; tokens.saturating_sub(1) as usize],
            tpot: Some((e2e - ttft) / (tokens - 1) as f64),
            tokens,
            tokens_from_usage: true,
            progress_chunks: 0,
        })
    }

    #[test]
    fn a_level_counts_failures_by_kind_and_rates_over_its_wall_time() {
        let fail = |k: &str| Outcome::Failed {
            kind: k.into(),
            message: format!("{k} happened"),
        };
        let outcomes = vec![
            sample(0.1, 1.0, 10),
            sample(0.2, 2.0, 30),
            fail("429"),
            fail("429"),
            fail("500"),
            fail("timeout"),
        ];
        let r = LevelReport::new(Level::Closed(4), &outcomes, 2.0, false);
        assert_eq!((r.requests, r.ok, r.rate_limited_429), (6, 2, 2));
        assert_eq!(r.errors.get("500"), Some(&1));
        assert_eq!(r.errors.get("timeout"), Some(&1));
        assert_eq!(r.errors.get("429"), None);
        assert_eq!(
            r.error_examples.get("429").map(String::as_str),
            Some("429 happened")
        );
        assert_eq!((r.requests_per_s, r.output_tokens_per_s), (1.0, 20.0));
        assert_eq!(r.searches_per_s, None);
        let ttft = r.ttft_ms.as_ref().unwrap();
        assert!((ttft.p50 - 150.0).abs() < 1e-9);
        assert_eq!(r.itl_ms.as_ref().unwrap().count, 38);
        let t = table(&[r], false);
        assert!(
            t.contains("| C=4 | 2/6 | 2 | 500×1 timeout×1 | 1.00 | 20.0 |"),
            "{t}"
        );
    }

    #[test]
    fn an_empty_level_has_no_latencies() {
        let r = LevelReport::new(Level::Open(2.0), &[], 0.0, true);
        assert_eq!(
            (r.ok, r.requests_per_s, r.searches_per_s),
            (0, 0.0, Some(0.0))
        );
        assert!(r.ttft_ms.is_none());
        assert!(table(&[r], true).contains("| 2 req/s | 0/0 | 0 | 0 | 0.00 |"));
    }
}
