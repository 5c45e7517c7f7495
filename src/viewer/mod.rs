//! The search viewer: one HTML page (with its CSS and JS inlined, no network at view time)
//! that renders a search step by step — each step's candidates with their rewards or drop
//! reasons, which were chosen and rejected, TPO's critique and suggestions, DARWIN's
//! mutations and replacements, the best reward per step as a chart, and the answer with its
//! cost.
//!
//! Two modes of the same page: [`live_page`], which `tpo serve` serves at `/` and `/ui` and
//! which runs a search through the public streaming chat API and renders its progress
//! chunks; and [`trace_page`], which `tpo trace view` writes from saved traces, replayed
//! through [`crate::search::events_of`] into exactly the events the live stream carries.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::search::{events_of, parse_traces, StepEvent, Strategy, Trace, TraceFileError};

const PAGE: &str = include_str!("assets/page.html");
const STYLE: &str = include_str!("assets/viewer.css");
const SCRIPT: &str = include_str!("assets/viewer.js");

/// Errors of the viewer.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("cannot encode the trace for the page: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: TraceFileError,
    },
    /// The page would overwrite the trace it is made from.
    #[error("the output {0} is the trace itself")]
    SameFile(PathBuf),
}

/// A search as the page renders it (the live page builds the same shape from the stream).
#[derive(Debug, Clone, Serialize)]
pub struct SearchView {
    pub query: String,
    /// `tpo`, `bon`, `darwin` or `greedy`.
    pub strategy: &'static str,
    /// One line of the settings the search ran with.
    pub settings: String,
    pub events: Vec<StepEvent>,
    #[serde(rename = "final")]
    pub answer: FinalView,
}

/// The answer of a search and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct FinalView {
    pub answer: String,
    pub reward: f32,
    pub all_dropped: bool,
    pub policy_calls: usize,
    pub completions: usize,
    pub reward_scorings: usize,
    pub prompt_tokens: usize,
    pub tokens_generated: usize,
    pub seconds: f64,
    pub dropped_by_reason: std::collections::BTreeMap<String, usize>,
}

impl SearchView {
    /// The view of a finished search.
    pub fn of(trace: &Trace) -> Self {
        let p = &trace.params;
        let mut settings = vec![trace.strategy.as_str().to_string()];
        match (&trace.darwin, trace.strategy) {
            (Some(d), _) => settings.push(format!(
                "{} mutations, {} iterations, replace every {} tokens, keep {}",
                d.mutations,
                d.iterations.len(),
                d.replace_every,
                d.keep
            )),
            (None, Strategy::Tpo) => {
                settings.push(format!("width {}, depth {}", p.width, p.depth));
            }
            (None, Strategy::BestOfN) => settings.push(format!("width {}", p.width)),
            (None, _) => {}
        }
        settings.push(format!("reward model {}", p.reward_model));
        settings.push(format!("{} tokens per call", p.max_new_tokens));
        if p.temperature > 0.0 {
            settings.push(format!(
                "temperature {}, top-p {}, seed {}",
                p.temperature, p.top_p, p.seed
            ));
        }
        Self {
            query: trace.query.clone(),
            strategy: trace.strategy.as_str(),
            settings: settings.join(" · "),
            events: events_of(trace),
            answer: FinalView {
                answer: trace.final_answer.clone(),
                reward: trace.final_reward,
                all_dropped: trace.all_dropped,
                policy_calls: trace.totals.requests,
                completions: trace.totals.completions,
                reward_scorings: trace.totals.rm_inputs,
                prompt_tokens: trace.totals.prompt_tokens,
                tokens_generated: trace.totals.tokens_generated,
                seconds: trace.totals.seconds,
                dropped_by_reason: trace.dropped.clone(),
            },
        }
    }
}

/// The page `tpo serve` serves: a form that runs a search through the streaming chat API
/// and renders it as it runs.
pub fn live_page() -> String {
    page("tpo-engine search viewer", "live", "null")
}

/// Writes the searches saved in `trace` (a `tpo search --trace` file: one pretty JSON trace
/// or JSON lines) as one page at `output` [default: `trace` with the extension `html`];
/// returns how many searches it holds and where it is. The page is written whole, then
/// renamed over the target: an interrupted run leaves no half page.
pub fn write_trace_page(
    trace: &Path,
    output: Option<&Path>,
) -> Result<(usize, PathBuf), ViewerError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ViewerError::Io { what, path, source }
    };
    let text = std::fs::read_to_string(trace).map_err(io("reading", trace))?;
    let traces = parse_traces(&text).map_err(|source| ViewerError::Parse {
        path: trace.to_path_buf(),
        source,
    })?;
    let output = output.map_or_else(|| trace.with_extension("html"), Path::to_path_buf);
    if output == trace {
        return Err(ViewerError::SameFile(output));
    }
    let page = trace_page(&traces)?;
    let partial = output.with_extension("html.partial");
    std::fs::write(&partial, page).map_err(io("writing", &partial))?;
    std::fs::rename(&partial, &output).map_err(io("writing", &output))?;
    Ok((traces.len(), output))
}

/// A self-contained page of saved searches (a picker when there are several).
pub fn trace_page(traces: &[Trace]) -> Result<String, ViewerError> {
    #[derive(Serialize)]
    struct Data {
        traces: Vec<SearchView>,
    }
    let data = Data {
        traces: traces.iter().map(SearchView::of).collect(),
    };
    let json = script_safe(&serde_json::to_string(&data)?);
    let title = match traces {
        [one] => format!("search: {}", first_chars(&one.query, 60)),
        _ => format!("{} searches", traces.len()),
    };
    Ok(page(&html_text(&title), "trace", &json))
}

fn page(title: &str, mode: &str, data: &str) -> String {
    // The data goes last: it may contain the other placeholders' names as text.
    PAGE.replace("__TITLE__", title)
        .replace("__MODE__", mode)
        .replace("__STYLE__", STYLE)
        .replace("__SCRIPT__", SCRIPT)
        .replace("__DATA__", data)
}

/// JSON that cannot end its `<script>` element early: every `<`, `>` and `&` as a `\u`
/// escape (the same string to `JSON.parse`), and the line separators JavaScript once treated
/// as line ends.
fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for ch in json.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text for an HTML element's content.
fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn first_chars(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_safe_json_cannot_close_the_script_and_parses_to_the_same_value() {
        let value = serde_json::json!({"text": "</script><script>alert(1)</script> & \u{2028}"});
        let safe = script_safe(&value.to_string());
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn the_live_page_inlines_its_script_and_style_and_asks_no_other_host() {
        let page = live_page();
        assert!(page.contains(r#"data-mode="live""#));
        assert!(page.contains("function render(view)"));
        assert!(page.contains("table.candidates"));
        assert!(!page.contains("__"), "a placeholder was left");
        // The only URLs: the SVG namespace (a name, never fetched) and an empty data: icon
        // (so the browser does not ask for /favicon.ico).
        let page = page
            .replace("\"http://www.w3.org/2000/svg\"", "")
            .replace(r#"href="data:,""#, "");
        for external in ["http://", "https://", "src=", "href=", "url(", "@import"] {
            assert!(!page.contains(external), "{external} appears in the page");
        }
    }

    #[test]
    fn long_titles_are_cut_on_a_character_boundary() {
        assert_eq!(first_chars("héllo wörld", 4), "héll…");
        assert_eq!(first_chars("short", 60), "short");
        assert_eq!(html_text("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
