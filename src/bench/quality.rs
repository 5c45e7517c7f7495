//! `tpo bench quality`: a report over trace files written by
//! `tpo search --file prompts.jsonl --trace run.trace.jsonl` (one JSON trace per line).
//!
//! Each `--run LABEL=FILE` is one run. Per run: the queries, the mean final reward with its
//! standard error, the mean tokens generated and seconds per query (a search's own wall
//! time, so with `--concurrency` above 1 it is latency among others, not cost alone), and
//! the curve of the best reward so far per step: at step s, the mean over queries of the
//! highest score among the candidates made at step ≤ s (a run whose candidates are all step
//! 0, like greedy or Best-of-N, is one point, drawn as a flat line across the plot).
//!
//! `--run "LABEL=FILE@N"` derives a Best-of-N run from a larger one: only the candidates
//! with id < N of each trace count, and their best score is the final reward. Best-of-N's
//! sample i is seeded seed + i, so the first 5 samples of a seed-7 N = 19 run are exactly
//! the seed-7 N = 5 run's samples (TPO's step-0 samples are the same ones too). Tokens per
//! query of a derived run are the sum of those candidates' tokens; its seconds are unknown.
//!
//! Syntax of `--run`: the label is everything before the LAST `=` (so a label may contain
//! `=`, a file name may not); a trailing `@N` (digits) on the file is the prefix size (so a
//! file whose name really ends in `@digits` cannot be read this way; rename it).
//!
//! Each line is read as the typed [`Trace`] `tpo search` writes (fields it does not know
//! are ignored); the report uses `query`, `strategy`, `params`,
//! `candidates[].id`/`.step`/`.score`/`.dropped`/`.tokens`, `final_reward`,
//! `totals.tokens_generated` and `totals.seconds`. A last line that does not parse in a
//! file that does not end with a newline is taken to be still being written and skipped
//! with a warning; any other bad line is an error.
//!
//! Output: the table on stdout as Markdown (`--markdown FILE` too), `--json FILE` with the
//! curves, `--plot FILE.png` with one line per run. The plot needs a TrueType font (the
//! bitmap backend draws text with ab_glyph): `--font FILE`, else the first usable one of
//! `super::plot::FONT_CANDIDATES` and then any `.ttf` under its `FONT_DIRS`. Use one invocation per reward
//! model: scores of different reward models are not on one scale.
//!
//! Not here: the flags (`src/cli/bench_quality.rs`) and printing the table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::BenchError;
use crate::search::Trace;

/// What `tpo bench quality` reports on (its flags, parsed).
#[derive(Debug, Clone)]
pub struct QualityOptions {
    /// A run: LABEL=FILE, or LABEL=FILE@N for the first N candidates of each trace as a
    /// Best-of-N (repeat for each run).
    pub runs: Vec<RunSpec>,
    /// Draw the best reward so far per step, one line per run, to this PNG.
    pub plot: Option<PathBuf>,
    /// TrueType font for the plot's text [default: DejaVu Sans or the first .ttf found].
    pub font: Option<PathBuf>,
    /// Plot title.
    pub title: String,
    /// Write the table as Markdown to this file too.
    pub markdown: Option<PathBuf>,
    /// Write the runs (summaries and curves) as JSON to this file.
    pub json: Option<PathBuf>,
}

/// One `--run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub label: String,
    pub file: PathBuf,
    /// Only candidates with id < this, their best score as the final reward.
    pub prefix: Option<usize>,
}

/// Reads one `--run LABEL=FILE[@N]`.
pub fn parse_run_spec(s: &str) -> Result<RunSpec, String> {
    let (label, file) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not LABEL=FILE[@N]"))?;
    let (label, mut file) = (label.trim(), file.trim());
    if label.is_empty() || file.is_empty() {
        return Err(format!(
            "{s:?}: both the label and the file must be non-empty"
        ));
    }
    let mut prefix = None;
    if let Some((path, n)) = file.rsplit_once('@') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let n: usize = n.parse().map_err(|e| format!("{s:?}: @{n}: {e}"))?;
            if n == 0 {
                return Err(format!("{s:?}: @N must be at least 1"));
            }
            if path.is_empty() {
                return Err(format!("{s:?}: no file before @{n}"));
            }
            prefix = Some(n);
            file = path;
        }
    }
    Ok(RunSpec {
        label: label.to_string(),
        file: PathBuf::from(file),
        prefix,
    })
}

/// What the report needs of one trace.
#[derive(Debug, Clone, PartialEq)]
struct QueryResult {
    query: String,
    strategy: String,
    reward_model: Option<String>,
    /// `(step, score)` of each candidate that counts (all, or id < N).
    candidates: Vec<(usize, Option<f64>)>,
    final_reward: Option<f64>,
    tokens: Option<f64>,
    seconds: Option<f64>,
}

/// A trace's `f32` score as the `f64` its JSON text reads as (the shortest decimal that
/// round-trips the `f32`, as serde_json writes it), so the report's numbers are the ones
/// in the file, not the binary widening's extra digits.
fn widen(x: f32) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    Some(x.to_string().parse().unwrap_or(f64::from(x)))
}

/// Reads one trace; `prefix` keeps the candidates with id < N and takes their best score.
fn query_result(trace: &Trace, prefix: Option<usize>) -> Result<QueryResult, String> {
    let mut candidates = Vec::new();
    let mut tokens = 0.0;
    let mut seen = 0;
    for c in &trace.candidates {
        if prefix.is_some_and(|n| c.id >= n) {
            continue;
        }
        seen += 1;
        // A dropped candidate is not in the cache, whatever its score says.
        let score = if c.dropped.is_some() {
            None
        } else {
            c.score.and_then(widen)
        };
        tokens += c.tokens as f64;
        candidates.push((c.step, score));
    }
    let (final_reward, tokens, seconds) = match prefix {
        Some(n) => {
            if seen < n {
                return Err(format!(
                    "@{n} needs at least {n} candidates; this trace has {seen} with id < {n}"
                ));
            }
            let best = candidates
                .iter()
                .filter_map(|&(_, s)| s)
                .fold(None, |best: Option<f64>, s| {
                    Some(best.map_or(s, |b| b.max(s)))
                });
            (best, Some(tokens), None)
        }
        None => (
            widen(trace.final_reward),
            Some(trace.totals.tokens_generated as f64),
            Some(trace.totals.seconds),
        ),
    };
    Ok(QueryResult {
        query: trace.query.clone(),
        strategy: trace.strategy.as_str().to_string(),
        reward_model: Some(trace.params.reward_model.clone()),
        candidates,
        final_reward,
        tokens,
        seconds,
    })
}

/// Best score so far at steps `0..=max_step`: at s, the highest score among candidates of
/// step ≤ s (`None` while nothing is scored yet).
fn best_so_far(candidates: &[(usize, Option<f64>)], max_step: usize) -> Vec<Option<f64>> {
    let mut out = Vec::with_capacity(max_step + 1);
    let mut best: Option<f64> = None;
    for s in 0..=max_step {
        for &(step, score) in candidates {
            if step == s {
                if let Some(x) = score {
                    best = Some(best.map_or(x, |b| b.max(x)));
                }
            }
        }
        out.push(best);
    }
    out
}

/// Mean and standard error (sample standard deviation / √n) of the finite values; the
/// error needs two of them.
fn mean_and_stderr(values: &[f64]) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (Some(mean), None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (Some(mean), Some((var / n).sqrt()))
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().collect();
    mean_and_stderr(&v).0
}

/// One point of a run's curve.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct CurvePoint {
    step: usize,
    /// Mean over the queries that have a scored candidate by this step.
    mean_best: Option<f64>,
    queries: usize,
}

/// The mean best-so-far curve of a run, steps 0 to its last candidate's step.
fn curve(queries: &[QueryResult]) -> Vec<CurvePoint> {
    let max_step = queries
        .iter()
        .flat_map(|q| q.candidates.iter().map(|&(s, _)| s))
        .max()
        .unwrap_or(0);
    let per_query: Vec<Vec<Option<f64>>> = queries
        .iter()
        .map(|q| best_so_far(&q.candidates, max_step))
        .collect();
    (0..=max_step)
        .map(|step| {
            let values: Vec<f64> = per_query.iter().filter_map(|b| b[step]).collect();
            CurvePoint {
                step,
                mean_best: mean_and_stderr(&values).0,
                queries: values.len(),
            }
        })
        .collect()
}

/// The report of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct RunSummary {
    label: String,
    file: String,
    prefix: Option<usize>,
    strategy: String,
    reward_model: String,
    params: Value,
    queries: usize,
    /// Queries without a final reward (nothing scored), left out of the mean.
    unscored: usize,
    mean_final_reward: Option<f64>,
    stderr_final_reward: Option<f64>,
    mean_tokens_per_query: Option<f64>,
    mean_seconds_per_query: Option<f64>,
    curve: Vec<CurvePoint>,
}

fn summarize(spec: &RunSpec, params: Value, queries: &[QueryResult]) -> RunSummary {
    let rewards: Vec<f64> = queries.iter().filter_map(|q| q.final_reward).collect();
    let (mean_final_reward, stderr_final_reward) = mean_and_stderr(&rewards);
    let distinct = |f: &dyn Fn(&QueryResult) -> String| {
        let mut v: Vec<String> = queries.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.join("+")
    };
    let mut strategy = distinct(&|q| q.strategy.clone());
    if let Some(n) = spec.prefix {
        strategy = format!("{strategy}@{n}");
    }
    RunSummary {
        label: spec.label.clone(),
        file: spec.file.display().to_string(),
        prefix: spec.prefix,
        strategy,
        reward_model: distinct(&|q| short_model_name(q.reward_model.as_deref().unwrap_or("?"))),
        params,
        queries: queries.len(),
        unscored: queries.len() - rewards.len(),
        mean_final_reward,
        stderr_final_reward,
        mean_tokens_per_query: mean(queries.iter().map(|q| q.tokens)),
        mean_seconds_per_query: mean(queries.iter().map(|q| q.seconds)),
        curve: curve(queries),
    }
}

/// `/work/main/models/smollm2-judge` → `smollm2-judge`; names stay as they are.
fn short_model_name(name: &str) -> String {
    Path::new(name)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

/// The traces of a JSONL text, each line a typed [`Trace`]; the warnings say what was
/// skipped.
fn parse_traces(text: &str) -> Result<(Vec<Trace>, Vec<String>), String> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut traces = Vec::with_capacity(lines.len());
    let mut warnings = Vec::new();
    for (k, &(index, line)) in lines.iter().enumerate() {
        match serde_json::from_str::<Trace>(line) {
            Ok(v) => traces.push(v),
            Err(e) if k + 1 == lines.len() && !text.ends_with('\n') => warnings.push(format!(
                "line {} is incomplete (still being written?), skipped: {e}",
                index + 1
            )),
            Err(e) => return Err(format!("line {}: not a search trace: {e}", index + 1)),
        }
    }
    Ok((traces, warnings))
}

fn load_run(spec: &RunSpec) -> Result<RunSummary, BenchError> {
    let text = std::fs::read_to_string(&spec.file).map_err(|source| BenchError::Io {
        what: "reading",
        path: spec.file.clone(),
        source,
    })?;
    let bad = |reason: String| BenchError::File {
        path: spec.file.clone(),
        reason,
    };
    let (traces, warnings) = parse_traces(&text).map_err(bad)?;
    for w in warnings {
        eprintln!("warning: {}: {w}", spec.file.display());
    }
    if traces.is_empty() {
        return Err(bad("no traces".into()));
    }
    let queries = traces
        .iter()
        .enumerate()
        .map(|(i, t)| query_result(t, spec.prefix).map_err(|e| format!("trace {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let mut params = serde_json::to_value(&traces[0].params).unwrap_or(Value::Null);
    if let (Some(n), Some(p)) = (spec.prefix, params.as_object_mut()) {
        p.insert("width".into(), json!(n));
    }
    Ok(summarize(spec, params, &queries))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

fn markdown(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    out.push_str(
        "| run | strategy | reward model | queries | mean final reward | ± s.e. | tokens/query | s/query |\n",
    );
    out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in runs {
        let unscored = if r.unscored > 0 {
            format!(" ({} unscored)", r.unscored)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}{unscored} | {} | {} | {} | {} |",
            r.label.replace('|', "\\|"),
            r.strategy,
            r.reward_model,
            r.queries,
            fmt_opt(r.mean_final_reward, 4),
            fmt_opt(r.stderr_final_reward, 4),
            fmt_opt(r.mean_tokens_per_query, 0),
            fmt_opt(r.mean_seconds_per_query, 1),
        );
    }
    if runs.iter().any(|r| r.prefix.is_some()) {
        out.push_str(
            "\nA run `@N` keeps the first N candidates of each trace and takes their best score; \
             its tokens are those candidates' tokens and its time is unknown.\n",
        );
    }
    out
}

/// The runs of a report: the caller prints [`Self::table`], then [`Self::write`]s the
/// files the options ask for.
pub struct QualityReport {
    runs: Vec<RunSummary>,
}

/// Reads every run's traces (warnings on stderr) and summarizes them.
pub fn run(args: &QualityOptions) -> Result<QualityReport, BenchError> {
    let runs = args
        .runs
        .iter()
        .map(load_run)
        .collect::<Result<Vec<_>, _>>()?;
    let mut models: Vec<&str> = runs.iter().map(|r| r.reward_model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    if models.len() > 1 {
        eprintln!(
            "note: these runs use different reward models ({}); their rewards are not on one \
             scale",
            models.join(", ")
        );
    }
    Ok(QualityReport { runs })
}

impl QualityReport {
    /// The Markdown table of the runs.
    pub fn table(&self) -> String {
        markdown(&self.runs)
    }

    /// Writes `--markdown`, `--json` and `--plot`, those that are asked for.
    pub fn write(&self, args: &QualityOptions) -> Result<(), BenchError> {
        let runs = &self.runs;
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|source| BenchError::Io {
                what: "writing",
                path: path.to_path_buf(),
                source,
            })
        };
        if let Some(path) = &args.markdown {
            write(path, self.table())?;
        }
        if let Some(path) = &args.json {
            let value = json!({
                "runs": runs,
                "tpo_version": env!("CARGO_PKG_VERSION"),
                "commit": env!("TPO_GIT_COMMIT"),
            });
            super::write_json(path, &value)?;
        }
        if let Some(path) = &args.plot {
            super::plot::register_font(args.font.as_deref())?;
            plot(path, &args.title, runs).map_err(|reason| BenchError::DrawPlot {
                path: path.clone(),
                reason,
            })?;
            eprintln!("plot written to {}", path.display());
        }
        Ok(())
    }
}

/// The series a run draws: its curve, held flat to `last_step` after its own last step.
fn plotted_points(run: &RunSummary, last_step: usize) -> Vec<(i32, f64)> {
    let mut points: Vec<(i32, f64)> = run
        .curve
        .iter()
        .filter_map(|p| p.mean_best.map(|y| (p.step as i32, y)))
        .collect();
    if let Some(&(x, y)) = points.last() {
        if (x as usize) < last_step {
            points.push((last_step as i32, y));
        }
    }
    points
}

fn plot(path: &Path, title: &str, runs: &[RunSummary]) -> Result<(), String> {
    use plotters::prelude::*;

    let last_step = runs
        .iter()
        .filter_map(|r| r.curve.last().map(|p| p.step))
        .max()
        .unwrap_or(0);
    let series: Vec<Vec<(i32, f64)>> = runs.iter().map(|r| plotted_points(r, last_step)).collect();
    let ys = series.iter().flatten().map(|&(_, y)| y);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !lo.is_finite() {
        return Err("no run has a scored candidate to draw".into());
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    // Room under the lowest line for the legend (about 22 px a run of ~480 px of plot).
    let legend = ((22 * runs.len() + 24) as f64 / 480.0).min(0.6);
    let pad_low = legend * (hi - lo + pad) / (1.0 - legend);
    let x_end = last_step.max(1) as i32;

    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0..x_end, (lo - pad_low)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("mean best reward so far")
        .x_labels((x_end + 1) as usize)
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{:.3}", if y.abs() < 5e-4 { 0.0 } else { *y }))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (run, points)) in runs.iter().zip(&series).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = color.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(format!("{} (n={})", run.label, run.queries))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(
                run.curve
                    .iter()
                    .filter_map(|p| p.mean_best.map(|y| (p.step as i32, y)))
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::search::trace::{Candidate, Finish, Origin, Totals, TraceParams};
    use crate::search::Strategy;

    fn cand(id: usize, step: usize, score: Option<f32>, tokens: usize) -> Candidate {
        Candidate {
            id,
            step,
            origin: Origin::Mutation,
            parents: Vec::new(),
            instruction: None,
            seed: None,
            text: String::new(),
            raw: None,
            tokens,
            finish_reason: Finish::Stop,
            score,
            dropped: None,
            drop_detail: None,
        }
    }

    fn trace(query: &str, candidates: Vec<Candidate>, final_reward: f32) -> Trace {
        Trace {
            schema_version: 1,
            query: query.into(),
            strategy: Strategy::Darwin,
            params: TraceParams {
                width: 5,
                depth: 2,
                temperature: 0.7,
                top_p: 0.95,
                max_new_tokens: 8,
                seed: 7,
                reward_model: "/m/models/smollm2-judge".into(),
            },
            candidates,
            steps: Vec::new(),
            final_id: 0,
            final_answer: String::new(),
            final_reward,
            dropped: Default::default(),
            all_dropped: false,
            totals: Totals {
                tokens_generated: 100,
                seconds: 2.0,
                ..Totals::default()
            },
            darwin: None,
        }
    }

    fn spec(prefix: Option<usize>) -> RunSpec {
        RunSpec {
            label: "r".into(),
            file: "f".into(),
            prefix,
        }
    }

    #[test]
    fn run_specs_split_at_the_last_equals_and_take_a_trailing_at_n() {
        assert_eq!(
            parse_run_spec("TPO D2-N5 (judge)=tpo-judge.trace.jsonl").unwrap(),
            RunSpec {
                label: "TPO D2-N5 (judge)".into(),
                file: "tpo-judge.trace.jsonl".into(),
                prefix: None
            }
        );
        assert_eq!(
            parse_run_spec("BoN N=5=dir/bon19.trace.jsonl@5").unwrap(),
            RunSpec {
                label: "BoN N=5".into(),
                file: "dir/bon19.trace.jsonl".into(),
                prefix: Some(5)
            }
        );
        // Not digits after @: part of the file name.
        assert_eq!(
            parse_run_spec("a=me@host.jsonl").unwrap().file,
            PathBuf::from("me@host.jsonl")
        );
        assert!(parse_run_spec("no-equals").is_err());
        assert!(parse_run_spec("=file").is_err());
        assert!(parse_run_spec("label=").is_err());
        assert!(parse_run_spec("l=f@0").is_err());
    }

    #[test]
    fn best_so_far_takes_the_max_over_earlier_steps_and_skips_unscored() {
        let c = [
            (0, Some(0.2)),
            (0, None),
            (0, Some(0.5)),
            (1, Some(0.4)),
            (2, Some(0.9)),
            (2, None),
        ];
        assert_eq!(
            best_so_far(&c, 3),
            vec![Some(0.5), Some(0.5), Some(0.9), Some(0.9)]
        );
        // Nothing scored until step 1.
        assert_eq!(
            best_so_far(&[(0, None), (1, Some(-1.0))], 1),
            vec![None, Some(-1.0)]
        );
        // Candidates out of step order still count at their own step.
        assert_eq!(
            best_so_far(&[(1, Some(3.0)), (0, Some(1.0))], 1),
            vec![Some(1.0), Some(3.0)]
        );
    }

    #[test]
    fn a_prefix_run_keeps_ids_below_n_and_takes_their_best_score() {
        let t = trace(
            "q",
            vec![
                cand(0, 0, Some(0.1), 10),
                cand(1, 0, Some(0.3), 20),
                cand(2, 0, None, 30),
                cand(3, 0, Some(0.9), 40),
                cand(4, 0, Some(0.8), 50),
            ],
            0.9,
        );
        let q = query_result(&t, Some(3)).unwrap();
        assert_eq!(
            q.candidates,
            vec![(0, Some(0.1)), (0, Some(0.3)), (0, None)]
        );
        assert_eq!(q.final_reward, Some(0.3));
        assert_eq!(q.tokens, Some(60.0));
        assert_eq!(q.seconds, None);

        // Without a prefix: the trace's own numbers.
        let q = query_result(&t, None).unwrap();
        assert_eq!(q.final_reward, Some(0.9));
        assert_eq!(q.tokens, Some(100.0));
        assert_eq!(q.seconds, Some(2.0));
        assert_eq!(q.strategy, "darwin");
        assert_eq!(q.candidates.len(), 5);

        // Ids, not positions, decide.
        let shuffled = trace(
            "q",
            vec![cand(4, 0, Some(5.0), 1), cand(0, 0, Some(1.0), 1)],
            5.0,
        );
        let q = query_result(&shuffled, Some(1)).unwrap();
        assert_eq!(q.final_reward, Some(1.0));

        // A prefix larger than the trace is an error, not a silent smaller N.
        assert!(query_result(&t, Some(6)).unwrap_err().contains("@6"));
        // A dropped candidate's score does not count.
        let mut replaced = cand(1, 0, Some(9.0), 1);
        replaced.dropped = Some("replaced".into());
        let t2 = trace("q", vec![cand(0, 0, Some(1.0), 1), replaced], 1.0);
        assert_eq!(
            query_result(&t2, None).unwrap().candidates,
            vec![(0, Some(1.0)), (0, None)]
        );
        assert_eq!(query_result(&t2, Some(2)).unwrap().final_reward, Some(1.0));
        // All of the prefix unscored: no final reward.
        let t = trace(
            "q",
            vec![cand(0, 0, None, 1), cand(1, 0, Some(2.0), 1)],
            2.0,
        );
        assert_eq!(query_result(&t, Some(1)).unwrap().final_reward, None);
    }

    #[test]
    fn means_standard_errors_and_curves_over_queries() {
        let (m, se) = mean_and_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, Some(2.5));
        // sample sd = sqrt(5/3); se = sd / 2
        assert!((se.unwrap() - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(mean_and_stderr(&[7.0]), (Some(7.0), None));
        assert_eq!(mean_and_stderr(&[]), (None, None));
        assert_eq!(mean_and_stderr(&[f64::NAN, 1.0]), (Some(1.0), None));

        let traces = [
            trace(
                "a",
                vec![
                    cand(0, 0, Some(0.0), 1),
                    cand(1, 1, Some(1.0), 1),
                    cand(2, 2, Some(0.5), 1),
                ],
                1.0,
            ),
            trace(
                "b",
                vec![cand(0, 0, None, 1), cand(1, 1, Some(3.0), 1)],
                3.0,
            ),
        ];
        let queries: Vec<QueryResult> = traces
            .iter()
            .map(|t| query_result(t, None).unwrap())
            .collect();
        let s = summarize(&spec(None), Value::Null, &queries);
        assert_eq!(s.queries, 2);
        assert_eq!(s.mean_final_reward, Some(2.0));
        assert_eq!(s.stderr_final_reward, Some(1.0));
        assert_eq!(s.mean_tokens_per_query, Some(100.0));
        assert_eq!(s.mean_seconds_per_query, Some(2.0));
        assert_eq!(s.reward_model, "smollm2-judge");
        assert_eq!(
            s.curve,
            vec![
                CurvePoint {
                    step: 0,
                    mean_best: Some(0.0),
                    queries: 1
                },
                CurvePoint {
                    step: 1,
                    mean_best: Some(2.0),
                    queries: 2
                },
                CurvePoint {
                    step: 2,
                    mean_best: Some(2.0),
                    queries: 2
                },
            ]
        );
        // A flat run is drawn to the last step of the plot.
        let flat = summarize(
            &spec(Some(1)),
            Value::Null,
            &[query_result(&traces[0], Some(1)).unwrap()],
        );
        assert_eq!(flat.strategy, "darwin@1");
        assert_eq!(plotted_points(&flat, 2), vec![(0, 0.0), (2, 0.0)]);
        assert_eq!(plotted_points(&s, 2), vec![(0, 0.0), (1, 2.0), (2, 2.0)]);
    }

    #[test]
    fn an_incomplete_last_line_is_skipped_but_a_bad_middle_line_is_an_error() {
        let good = serde_json::to_string(&trace("q", vec![cand(0, 0, Some(1.0), 1)], 1.0)).unwrap();
        // Fields this version does not know are ignored.
        let newer = good.replacen('{', "{\"unknown_future_field\": {\"x\": 1}, ", 1);
        assert_eq!(parse_traces(&format!("{newer}\n")).unwrap().0.len(), 1);
        let (t, w) = parse_traces(&format!("{good}\n{good}\n{{\"query\": \"tr")).unwrap();
        assert_eq!((t.len(), w.len()), (2, 1));
        assert!(parse_traces(&format!("{good}\n{{bad\n{good}\n")).is_err());
        // A complete file whose last line is bad is an error too.
        assert!(parse_traces(&format!("{good}\n{{bad\n")).is_err());
        let (t, w) = parse_traces(&format!("\n{good}\n\n")).unwrap();
        assert_eq!((t.len(), w.len()), (1, 0));
    }
}
