//! The degenerate-candidate guard: answers that are not answers are dropped before they are
//! scored, with a reason code in the trace. A weak reward model often rates them highly (the
//! embedded judge gave "How do you wrap a present neatly? / Rewrite the answer so that it
//! meets the following criteria:" 0.91, above every real answer), so a search would pick
//! them.
//!
//! A search builds one [`Guard`] from every text the engine renders into its prompts: our
//! prompt text (`prompts`, the revision tags) and the fixed text of the policy's own chat
//! template (its default system prompt, role headers and special markers, found by
//! [`crate::model::ChatTemplate::fixed_text`]), so a user's model is guarded against its own
//! template too. Five checks, in this order, each with its named threshold:
//! - [`Degenerate::Empty`] (`empty`): nothing but whitespace and punctuation;
//! - [`Degenerate::LeakedPrompt`] (`leaked_prompt`): the answer contains text we put in the
//!   prompt: the revision tag; a special marker of the template (`<|im_start|>`) verbatim; a
//!   run of [`LEAK_MIN_WORDS`] consecutive words of one of our instruction sentences, or a
//!   line opening with [`LEAK_LINE_START_WORDS`] of them, where the run names a role of the
//!   search (answer, rewrite, suggestions …); or a run of [`TEMPLATE_LEAK_MIN_WORDS`]
//!   consecutive words of the template's fixed text ("You are a helpful AI assistant named
//!   SmolLM …"). A run (or marker) that is in the user's question is theirs, never a leak.
//!   The engine wrote every one of those texts, so this is an exact check, not a guess
//!   about quality;
//! - [`Degenerate::Echo`] (`echo`): the answer only restates the question: it shares a word
//!   with it and adds no word beyond the question's and [`ECHO_FILLER_WORDS`];
//! - [`Degenerate::Repetition`] (`repetition`): the answer loops: at least
//!   [`REPETITION_MAX_SHARE`] of its word [`REPETITION_NGRAM`]-grams repeat an earlier one
//!   (over at least [`REPETITION_MIN_NGRAMS`] of them), e.g. "C-C-C-C…" or one sentence
//!   written three times;
//! - [`Degenerate::Meta`] (`meta`): the answer talks about an answer instead of answering:
//!   its first or last sentence, or at least [`META_MAX_SHARE`] of its sentences, narrate a
//!   revision ("I hope to expand on my previous response …", "Here is the revised
//!   answer:"): [`META_MIN_WORDS`] distinct words of [`META_NOUNS`] and [`META_MARKS`], a
//!   noun among them, that are not words of the question.
//!
//! Words are runs of letters and digits, lowercased (so "C-C-C" is three words `c`).
//! [`Guard::check_partial`] is the subset that stays true as an answer grows (DARWIN judges
//! unfinished answers): a leak, a loop or a narrating first sentence already written cannot
//! be undone, while a partial answer that so far restates the question may go on to answer
//! it. The free functions [`check`] and [`check_partial`] are the guard without a template.

use std::collections::HashSet;

use super::prompts;
use super::tags;

/// Consecutive words of one of our instruction sentences that make a leak.
pub const LEAK_MIN_WORDS: usize = 4;

/// Consecutive words of ours that make a leak when a line of the answer starts with them
/// ("Rewrite the answer to:" — ours: "do not rewrite the answer"): an instruction opens a
/// line, prose rarely does.
pub const LEAK_LINE_START_WORDS: usize = 3;

/// Words of our prompts that name the search's roles; a leaked run must hold one, so a
/// common phrase of ours ("as a numbered list") never drops an answer that happens to use it.
pub const LEAK_ROLE_WORDS: &[&str] = &[
    "answer",
    "answers",
    "rewrite",
    "rewritten",
    "suggestions",
    "feedback",
    "question",
    "revised",
    "paraphrase",
    "paraphrased",
    "request",
];

/// Words an answer may add to the question and still be an echo of it: pronouns the model
/// swaps ("How do I" → "How do you"), articles, auxiliaries and question words.
pub const ECHO_FILLER_WORDS: &[&str] = &[
    "a", "an", "the", "i", "you", "we", "me", "my", "your", "our", "us", "it", "its", "is", "are",
    "am", "was", "were", "be", "do", "does", "did", "can", "could", "should", "would", "will",
    "how", "what", "why", "when", "where", "which", "who", "to", "of", "in", "on", "for", "and",
    "or", "so", "that", "this", "s",
];

/// Word n-gram length of the repetition check.
pub const REPETITION_NGRAM: usize = 4;

/// Share of repeated n-grams from which an answer loops. Calibrated on the 195 candidates of
/// 13 real TPO searches of the embedded model (`make demo`'s question and 12 AlpacaEval
/// instructions, 128 tokens): every one at 0.3 or above writes a sentence again, most
/// several times (the tests hold some); step-by-step lists stayed below 0.2.
pub const REPETITION_MAX_SHARE: f32 = 0.3;

/// Fewest n-grams (words − n + 1) the repetition check needs: a short answer never loops.
pub const REPETITION_MIN_NGRAMS: usize = 16;

/// Consecutive words of the chat template's fixed text (its default system prompt, e.g.
/// "You are a helpful AI assistant named SmolLM, trained by Hugging Face") that make a leak.
/// The template's text holds none of our role words, so its runs need to be longer than
/// [`LEAK_MIN_WORDS`]: six words of a system prompt do not occur in an answer by chance,
/// while four ("you are a helpful") do.
pub const TEMPLATE_LEAK_MIN_WORDS: usize = 6;

/// Longest special marker of a template, in characters between its brackets.
pub const MARKER_MAX_CHARS: usize = 40;

/// Labels of ours a line of prose may open with: a real answer writes "Answer: 4" or
/// "Question: …" in a quiz, so these two labels of our prompts never make a leak alone.
pub const LABELS_PROSE_OPENS_WITH: &[&str] = &["question:", "answer:"];

/// Words that name an answer as a piece of writing being revised: a sentence that narrates
/// the search talks about one of these instead of the question's subject. "rewrite",
/// "revision" and "draft" are left out: prose uses them with "answer" ("Simplify first, then
/// rewrite the answer as 1/2", "check your answers during revision").
pub const META_NOUNS: &[&str] = &[
    "response",
    "responses",
    "answer",
    "answers",
    "suggestion",
    "suggestions",
    "feedback",
    "critique",
];

/// Words that place such an answer in a revision: earlier, changed, or being changed.
pub const META_MARKS: &[&str] = &[
    "previous",
    "original",
    "earlier",
    "initial",
    "revised",
    "rewritten",
    "improved",
    "updated",
    "suggested",
    "expand",
];

/// Distinct words of [`META_NOUNS`] and [`META_MARKS`] (a noun among them) that make a
/// sentence narration: "my previous response", "the revised answer", "this response … the
/// suggested changes". One alone is prose ("The answer is 4").
pub const META_MIN_WORDS: usize = 2;

/// Share of sentences that narrate from which an answer is narration wherever they stand;
/// a narrating first or last sentence drops it alone.
pub const META_MAX_SHARE: f32 = 0.34;

/// Why a candidate is not an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Degenerate {
    #[error("the answer is empty")]
    Empty,
    #[error("the answer contains our prompt's text: \"{0}\"")]
    LeakedPrompt(String),
    #[error("the answer only restates the question")]
    Echo,
    #[error("the answer repeats itself ({share:.0}% of its {n}-word phrases repeat)", share = .share * 100.0, n = REPETITION_NGRAM)]
    Repetition { share: f32 },
    #[error("the answer talks about an answer instead of answering: \"{0}\"")]
    Meta(String),
}

impl Degenerate {
    /// Stable name used in traces and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Degenerate::Empty => "empty",
            Degenerate::LeakedPrompt(_) => "leaked_prompt",
            Degenerate::Echo => "echo",
            Degenerate::Repetition { .. } => "repetition",
            Degenerate::Meta(_) => "meta",
        }
    }
}

/// The codes [`Degenerate::code`] gives, for callers that read traces.
pub const CODES: &[&str] = &["empty", "leaked_prompt", "echo", "repetition", "meta"];

/// The guard of one search: our prompt text, and the fixed text of the policy's chat
/// template (its default system prompt, role headers and special markers, see
/// [`crate::model::ChatTemplate::fixed_text`]), split into words once.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Words of our instruction sentences, one list per text between placeholders.
    ours: Vec<Vec<String>>,
    /// Our prompts' labels ("Suggestions:", "Current answer:"), lowercased: the line's text
    /// before a placeholder, and the mutation's response prefix.
    labels: Vec<String>,
    /// Words of the template's fixed text, one list per text between markers.
    template: Vec<Vec<String>>,
    /// The template's special markers (`<|im_start|>`, `[INST]`), verbatim.
    markers: Vec<String>,
}

impl Default for Guard {
    /// Our prompt text only (no chat template known).
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Guard {
    /// A guard that knows our prompt text and `template_text`, the chat template's fixed
    /// pieces ([`crate::model::ChatTemplate::fixed_text`]).
    pub fn new(template_text: &[String]) -> Self {
        let ours = prompt_texts().map(words).collect();
        let mut labels: Vec<String> = Vec::new();
        for label in our_labels() {
            if !labels.contains(&label) && !LABELS_PROSE_OPENS_WITH.contains(&label.as_str()) {
                labels.push(label);
            }
        }
        let mut markers: Vec<String> = Vec::new();
        for m in template_text.iter().flat_map(|t| markers_in(t)) {
            if !markers.contains(&m) {
                markers.push(m);
            }
        }
        let template = template_text
            .iter()
            .flat_map(|t| split_at_markers(t, &markers))
            .map(words)
            .filter(|w| w.len() >= TEMPLATE_LEAK_MIN_WORDS)
            .collect();
        Self {
            ours,
            labels,
            template,
            markers,
        }
    }

    /// The template's special markers this guard looks for.
    pub fn markers(&self) -> &[String] {
        &self.markers
    }

    /// Checks a finished `answer` to `query`.
    pub fn check(&self, query: &str, answer: &str) -> Result<(), Degenerate> {
        let words = words(answer);
        if words.is_empty() {
            return Err(Degenerate::Empty);
        }
        self.leak(query, answer, &words)?;
        echo(query, &words)?;
        repetition(&words)?;
        meta(query, answer)
    }

    /// The checks that hold for an unfinished answer (see the module doc): leaks, loops and
    /// narration that opens the answer.
    pub fn check_partial(&self, query: &str, answer: &str) -> Result<(), Degenerate> {
        let words = words(answer);
        self.leak(query, answer, &words)?;
        repetition(&words)?;
        meta_opening(query, answer)
    }

    fn leak(&self, query: &str, answer: &str, words: &[String]) -> Result<(), Degenerate> {
        let lower = answer.to_lowercase();
        for tag in [tags::OPEN_TAG, tags::CLOSE_TAG] {
            if lower.contains(&tag.to_lowercase()) {
                return Err(Degenerate::LeakedPrompt(tag.to_string()));
            }
        }
        for marker in &self.markers {
            if answer.contains(marker.as_str()) && !query.contains(marker.as_str()) {
                return Err(Degenerate::LeakedPrompt(marker.clone()));
            }
        }
        let query_words = self::words(query);
        let line_starts: Vec<Vec<String>> = answer
            .lines()
            .map(|line| {
                let mut w = self::words(line);
                w.truncate(LEAK_LINE_START_WORDS);
                w
            })
            .filter(|w| w.len() == LEAK_LINE_START_WORDS)
            .collect();
        let leaked = |n: usize, found: &dyn Fn(&[String]) -> bool| {
            let asked = runs(&query_words, n);
            self.ours.iter().find_map(|ours| {
                ours.windows(n)
                    .find(|run| {
                        run.iter().any(|w| LEAK_ROLE_WORDS.contains(&w.as_str()))
                            && found(run)
                            && !asked.contains(run)
                    })
                    .map(|run| run.join(" "))
            })
        };
        // A line that opens with one of our labels ("Suggestions: …") copies our layout.
        for line in answer.lines() {
            let line = line
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            let label = self.labels.iter().find(|label| {
                let label_words = self::words(label);
                line.starts_with(label.as_str())
                    && !runs(&query_words, label_words.len()).contains(label_words.as_slice())
            });
            if let Some(label) = label {
                return Err(Degenerate::LeakedPrompt(label.clone()));
            }
        }
        let answer_runs = runs(words, LEAK_MIN_WORDS);
        let in_answer = |run: &[String]| answer_runs.contains(run);
        let opens_a_line = |run: &[String]| line_starts.iter().any(|start| start == run);
        if let Some(run) = leaked(LEAK_MIN_WORDS, &in_answer)
            .or_else(|| leaked(LEAK_LINE_START_WORDS, &opens_a_line))
        {
            return Err(Degenerate::LeakedPrompt(run));
        }
        // The template's text carries no role words of ours: a longer run of it is the leak.
        let n = TEMPLATE_LEAK_MIN_WORDS;
        let asked = runs(&query_words, n);
        let answer_runs = runs(words, n);
        let template_run = self.template.iter().find_map(|fixed| {
            fixed
                .windows(n)
                .find(|run| answer_runs.contains(run) && !asked.contains(run))
                .map(|run| run.join(" "))
        });
        match template_run {
            Some(run) => Err(Degenerate::LeakedPrompt(run)),
            None => Ok(()),
        }
    }
}

/// Checks a finished `answer` to `query` with our prompt text only ([`Guard::default`]); a
/// search uses its own [`Guard`], which also knows the policy's chat template.
pub fn check(query: &str, answer: &str) -> Result<(), Degenerate> {
    Guard::default().check(query, answer)
}

/// [`Guard::check_partial`] with our prompt text only ([`Guard::default`]).
pub fn check_partial(query: &str, answer: &str) -> Result<(), Degenerate> {
    Guard::default().check_partial(query, answer)
}

/// Our prompts' labels, lowercased: on each line of a prompt text, the text before a
/// `{placeholder}` when it ends with a colon ("Suggestions:"), and
/// [`prompts::MUTATION_RESPONSE_PREFIX`].
fn our_labels() -> Vec<String> {
    let mut labels = vec![prompts::MUTATION_RESPONSE_PREFIX.to_lowercase()];
    for text in [
        prompts::LOSS_TEMPLATE,
        prompts::GRADIENT_TEMPLATE,
        prompts::UPDATE_TEMPLATE,
        prompts::MUTATION_TEMPLATE,
    ] {
        for line in text.lines() {
            if let Some((before, _)) = line.split_once('{') {
                let label = before.trim();
                if label.ends_with(':') {
                    labels.push(label.to_lowercase());
                }
            }
        }
    }
    labels
}

/// The special markers in a template's fixed text: `<…>` and `[…]` with no whitespace
/// inside (`<|im_start|>`, `</s>`, `[INST]`, `<<SYS>`), a `[…]` only when it has no
/// lowercase letter (so a placeholder such as `[name]` is never one).
fn markers_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (open, close) in [('<', '>'), ('[', ']')] {
        let mut rest = text;
        while let Some(at) = rest.find(open) {
            let after = &rest[at + open.len_utf8()..];
            let Some(end) = after.find(close) else {
                break;
            };
            let inside = &after[..end];
            let ok = !inside.is_empty()
                && inside.chars().count() <= MARKER_MAX_CHARS
                && !inside.chars().any(char::is_whitespace)
                && (open == '<' || !inside.chars().any(char::is_lowercase));
            if ok {
                found.push(format!("{open}{inside}{close}"));
                rest = &after[end + close.len_utf8()..];
            } else {
                rest = after;
            }
        }
    }
    found
}

/// `text` cut at every marker (a run of words never spans one).
fn split_at_markers<'t>(text: &'t str, markers: &[String]) -> Vec<&'t str> {
    let mut parts = vec![text];
    for marker in markers {
        parts = parts
            .into_iter()
            .flat_map(|p| p.split(marker.as_str()))
            .collect();
    }
    parts
}

/// Lowercased runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every text our prompts put in front of the policy, placeholders removed.
fn prompt_texts() -> impl Iterator<Item = &'static str> {
    [
        prompts::LOSS_TEMPLATE,
        prompts::GRADIENT_TEMPLATE,
        prompts::UPDATE_TEMPLATE,
        prompts::GRADIENT_TURN,
        prompts::UPDATE_TURN,
        prompts::MUTATION_TEMPLATE,
        prompts::MUTATION_RESPONSE_PREFIX,
    ]
    .into_iter()
    // A run of words never spans a placeholder: split the templates there.
    .flat_map(|t| t.split(['{', '}']))
}

/// The answer's sentences: cut after `.`, `!`, `?` or `:` followed by whitespace, and at
/// line breaks; those without a word are left out.
fn sentences(answer: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in answer.lines() {
        let mut start = 0;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let ends = matches!(c, '.' | '!' | '?' | ':')
                && chars.peek().is_none_or(|(_, next)| next.is_whitespace());
            if ends {
                out.push(&line[start..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        out.push(&line[start..]);
    }
    out.retain(|s| s.chars().any(char::is_alphanumeric));
    out
}

/// Whether `sentence` narrates a revision ([`META_MIN_WORDS`]); words of the question
/// never count.
fn narrates(sentence: &str, asked: &HashSet<String>) -> bool {
    let mut nouns = HashSet::new();
    let mut marks = HashSet::new();
    for w in words(sentence) {
        if asked.contains(&w) {
            continue;
        }
        if META_NOUNS.contains(&w.as_str()) {
            nouns.insert(w);
        } else if META_MARKS.contains(&w.as_str()) {
            marks.insert(w);
        }
    }
    !nouns.is_empty() && nouns.len() + marks.len() >= META_MIN_WORDS
}

fn meta(query: &str, answer: &str) -> Result<(), Degenerate> {
    let asked: HashSet<String> = words(query).into_iter().collect();
    let sentences = sentences(answer);
    let narrating: Vec<&str> = sentences
        .iter()
        .copied()
        .filter(|s| narrates(s, &asked))
        .collect();
    let Some(first) = narrating.first() else {
        return Ok(());
    };
    let at_an_edge = [sentences.first(), sentences.last()]
        .into_iter()
        .flatten()
        .find(|s| narrates(s, &asked));
    let share = narrating.len() as f32 / sentences.len() as f32;
    match at_an_edge {
        Some(s) => Err(Degenerate::Meta(s.trim().to_string())),
        None if share >= META_MAX_SHARE => Err(Degenerate::Meta(first.trim().to_string())),
        None => Ok(()),
    }
}

/// [`meta`] for an unfinished answer: only its first sentence, which stays first.
fn meta_opening(query: &str, answer: &str) -> Result<(), Degenerate> {
    let asked: HashSet<String> = words(query).into_iter().collect();
    match sentences(answer).first() {
        Some(s) if narrates(s, &asked) => Err(Degenerate::Meta(s.trim().to_string())),
        _ => Ok(()),
    }
}

/// The runs of `n` consecutive words.
fn runs(words: &[String], n: usize) -> HashSet<&[String]> {
    words.windows(n).collect()
}

fn echo(query: &str, words: &[String]) -> Result<(), Degenerate> {
    let asked: HashSet<String> = self::words(query).into_iter().collect();
    let is_filler = |w: &str| ECHO_FILLER_WORDS.contains(&w);
    let adds_nothing = words.iter().all(|w| asked.contains(w) || is_filler(w));
    let shares_content = words.iter().any(|w| asked.contains(w) && !is_filler(w));
    if adds_nothing && shares_content {
        return Err(Degenerate::Echo);
    }
    Ok(())
}

fn repetition(words: &[String]) -> Result<(), Degenerate> {
    let share = repeated_share(words);
    match share {
        Some(share) if share >= REPETITION_MAX_SHARE => Err(Degenerate::Repetition { share }),
        _ => Ok(()),
    }
}

/// Share of the word n-grams that repeat an earlier one; `None` below
/// [`REPETITION_MIN_NGRAMS`].
pub fn repeated_share(words: &[String]) -> Option<f32> {
    let grams = words.len().checked_sub(REPETITION_NGRAM - 1)?;
    if grams < REPETITION_MIN_NGRAMS {
        return None;
    }
    let mut seen = HashSet::with_capacity(grams);
    let repeated = words
        .windows(REPETITION_NGRAM)
        .filter(|g| !seen.insert(*g))
        .count();
    Some(repeated as f32 / grams as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT: &str = "How do I wrap a present neatly?";

    fn code(query: &str, answer: &str) -> Option<&'static str> {
        check(query, answer).err().map(|d| d.code())
    }

    #[test]
    fn real_answers_of_the_embedded_model_are_kept() {
        // Outputs of SmolLM2-135M-Instruct in `make demo`'s TPO search (trace candidates 2, 7,
        // 11) and a short factual answer.
        for answer in [
            "To wrap a present with care, you need to consider the layout of the box, not just \
             the wrapping itself. Here's a simple step-by-step guide:\n\n1. Cut out a \
             rectangular box.\n\n2. Use a heat-resistant material like cotton to create a \
             functional wrap.\n\n3. Measure and cut the box to the desired size.\n\n4. Wr",
            "To wrap a present neatly, consider the layout of the box and ensure everything is \
             aligned. Here's a step-by-step guide to wrap a present neatly:\n\n1. Cut out a \
             rectangular box.\n\n2. Use a heat-resistant material like cotton to create a \
             functional wrap.\n\n3. Measure and cut the box to the desired size.\n",
            "How do you wrap a present neatly?\n\nThe answer is: Wrap a present neatly with a \
             heat-resistant box, a high-quality gift wrapping service, and a reputable box \
             manufacturer.",
        ] {
            assert_eq!(code(PRESENT, answer), None, "{answer}");
        }
        let france = "What is the capital of France?";
        assert_eq!(code(france, "Paris is the capital of France."), None);
        assert_eq!(code(france, "The capital of France is Paris."), None);
    }

    #[test]
    fn a_real_answer_that_echoes_the_question_and_our_instruction_is_a_leak() {
        // `make demo`'s winning TPO candidate before the guard (reward 0.91).
        let answer =
            "How do you wrap a present neatly?\n\nRewrite the answer so that it meets the following criteria:";
        let err = check(PRESENT, answer).unwrap_err();
        assert_eq!(err.code(), "leaked_prompt");
        assert!(err.to_string().contains("answer so that it"), "{err}");
    }

    #[test]
    fn our_tags_and_labels_in_an_answer_are_leaks() {
        assert_eq!(
            code(PRESENT, "<REVISED_ANSWER> Fold the paper."),
            Some("leaked_prompt")
        );
        // A real MT-bench-style update that restated our update prompt.
        assert_eq!(
            code(
                "Which option is right?",
                "Rewrite the current answer so that it follows the suggestions: The answer is A"
            ),
            Some("leaked_prompt")
        );
        // The same words in the user's own question are theirs, not a leak.
        let asked = "Rewrite the current answer so that it follows the suggestions of my editor.";
        assert_eq!(
            code(
                asked,
                "Rewrite the current answer so that it follows the suggestions: cut the intro."
            ),
            None
        );
        // A line that opens with three words of ours (real: the tail of `make demo`'s answer
        // once the guard was in); the same words inside a sentence are prose.
        let tail = "1. Cut out a rectangular box.\n\n7. Place the wrap on\n\nRewrite the answer to:\n\n<RISK_A";
        assert_eq!(code(PRESENT, tail), Some("leaked_prompt"));
        assert_eq!(
            code(
                "Simplify 2/4.",
                "Simplify first, then rewrite the answer as 1/2."
            ),
            None
        );
        // A common phrase of ours without a role word is not a leak.
        assert_eq!(
            code(
                "Give me tips for sleeping.",
                "Here they are as a numbered list: 1. Go to bed early."
            ),
            None
        );
    }

    #[test]
    fn restating_the_question_is_an_echo() {
        assert_eq!(
            code(PRESENT, "How do you wrap a present neatly?"),
            Some("echo")
        );
        assert_eq!(code(PRESENT, "wrap a present neatly"), Some("echo"));
        assert_eq!(code(PRESENT, "Neatly."), Some("echo"));
        assert_eq!(code(PRESENT, "Use tape."), None);
    }

    #[test]
    fn empty_after_punctuation_is_empty() {
        assert_eq!(code(PRESENT, ""), Some("empty"));
        assert_eq!(code(PRESENT, " \n ... -- "), Some("empty"));
    }

    #[test]
    fn real_loops_are_repetition() {
        // `make demo`'s sampled `generate` answer ended in a loop like this one; and a real
        // TPO update (demo trace candidate 12) that wrote one sentence three times.
        let loop_tail = format!("Here are three tips for learning Rust: {}", "C-".repeat(40));
        assert_eq!(
            code("Give me three tips for learning Rust.", &loop_tail),
            Some("repetition")
        );
        let sentence = "Wrap a present neatly with a heat-resistant box, a high-quality gift \
                        wrapping service, and a reputable box manufacturer.\n";
        let thrice = format!(
            "{sentence}{sentence}Wrap a present neatly with a heat-resistant box, a high-qu"
        );
        let err = check(PRESENT, &thrice).unwrap_err();
        assert_eq!(err.code(), "repetition");
        assert!(repeated_share(&words(&thrice)).is_some_and(|s| s > 0.4));
        // Below the n-gram minimum nothing loops, however repetitive.
        assert_eq!(repeated_share(&words("no no no no no")), None);
    }

    #[test]
    fn real_meta_answers_of_tpo_updates_are_leaks() {
        // Winners of real TPO searches on AlpacaEval instructions before the guard (rewards
        // 1.38 and 0.91 from the judge): the model restated our critique prompt.
        let music = "A: In this context, answer A is better than answer B.\n\nThe answer A is \
                     better than answer B.\n\nRewrite the answer to match the suggestions.";
        assert_eq!(
            code("What are some famous world music artists?", music),
            Some("leaked_prompt")
        );
        let elder = "Rewrite the answer in a bold font with a second answer:\n\nThe answer E \
                     is better than Answer B.";
        assert_eq!(
            code(
                "Did they ever announce the release date for the new elder scrolls game?",
                elder
            ),
            Some("leaked_prompt")
        );
    }

    #[test]
    fn a_real_answer_that_writes_its_sentence_again_is_repetition_at_the_threshold() {
        // A real TPO update (AlpacaEval "Please tell me the history of Walt Disney."), share
        // 0.30: the last sentence three times.
        let disney = "Walt Disney was born on December 21, 1902, in Hollywood, California. His \
            parents were both artists and played a significant role in shaping the world of \
            animation, and Disney was born to them. He grew up surrounded by the arts, where he \
            was exposed to different cultures and cultures of the world. This inspired him to \
            create stories and characters that reflected the diversity of his society and the \
            world. This enabled him to create stories and characters that reflected the \
            diversity of his society and the world. This inspired him to create stories and \
            characters that reflected the diversity of his society and the world.\n\nThis answer";
        let share = repeated_share(&words(disney)).unwrap_or(0.0);
        assert!((REPETITION_MAX_SHARE..0.35).contains(&share), "{share}");
        assert_eq!(
            code("Please tell me the history of Walt Disney.", disney),
            Some("repetition")
        );
        // The same answer with its sentence written once is kept.
        let once = disney.split(" This enabled").next().unwrap_or_default();
        assert_eq!(
            code("Please tell me the history of Walt Disney.", once),
            None
        );
    }

    #[test]
    fn partial_answers_are_not_judged_as_echoes() {
        assert_eq!(
            check_partial(PRESENT, "How do you wrap a present neatly?"),
            Ok(())
        );
        assert_eq!(check_partial(PRESENT, ""), Ok(()));
        assert!(check_partial(PRESENT, "<revised_answer>").is_err());
    }

    const TIME: &str = "How can I improve my time management skills?";
    const STRESS: &str = "What are the most effective ways to deal with stress?";
    const EMAIL: &str =
        "Write a persuasive email to convince your introverted friend, who dislikes \
                         public speaking, to volunteer as a guest speaker at a local event.";
    const REPORT: &str = "Draft a professional email seeking your supervisor's feedback on the \
                          'Quarterly Financial Report' you prepared.";

    #[test]
    fn real_answers_to_held_out_questions_are_kept() {
        // Step-0 samples and a kept rewrite of real TPO searches (embedded model, judge,
        // 96 new tokens, seed 7) on MT-bench-style questions; the report email talks about
        // feedback because the question asks for it.
        for (query, answer) in [
            (
                TIME,
                "Improving time management skills is a skill that can be learned and practiced. \
            Here are some tips to help you improve your time management skills:\n\n1. \
            **Set a Schedule**: The first step to any successful time management is \
            setting a schedule. This can be as simple as having a daily planner or app \
            that helps you track your tasks.\n\n2. **Prioritize Tasks**: The second step \
            is to prioritize your tasks. This can be as simple as identifying what you \
            need to do",
            ),
            (
                TIME,
                "Improving time management skills is a skill that can be learned and practiced, \
            and there's no one-size-fits-all approach. However, there are some general \
            tips that can make a significant difference in their daily lives.\n\nFirstly, \
            it's important to recognize that time management is not a skill that is \
            exclusive to professional environments. People with leisure activities can \
            benefit from improving their time management skills, as it can make a \
            significant difference in their daily lives.",
            ),
            (
                STRESS,
                "Dealing with stress is a personal and complex task, but there are several \
            effective methods that can help manage stress. Here are some of them:\n\n1. \
            Practice mindfulness and meditation: These techniques help you become more \
            aware of your thoughts and emotions, making it easier to manage them.\n\n2. \
            Exercise regularly: Physical activity is known to reduce stress by lowering \
            the levels of stress hormones in the body.\n\n3. Balanced diet: Eating a diet \
            rich in nutrients that help the",
            ),
            (
                EMAIL,
                "Dear [Friend's Name],\n\nI wanted to share a fantastic opportunity with you, a \
            fellow introverted friend who is also a professional. As a guest speaker at a \
            local event, you could have the privilege of being an expert in public \
            speaking. This could be a chance to share your passion with someone who may \
            not have the luxury of a traditional speaking role.\n\nI've been thinking \
            about this for a while now, and I'm excited about the idea.",
            ),
            (
                REPORT,
                "Dear [Supervisor's Name],\n\nI hope this message finds you well. I am writing \
            to seek your feedback on the Annual Financial Report I prepared for my team \
            this quarter. I understand that you are a responsible and dedicated manager, \
            and I appreciate your dedication to your team's success.\n\nYour feedback is \
            important to me, and I would greatly appreciate your insights.\n\nPlease find \
            the attached document that outlines my financial report and provides detailed \
            information about the performance of",
            ),
        ] {
            assert_eq!(smollm2().check(query, answer), Ok(()), "{answer}");
        }
    }

    #[test]
    fn real_rewrites_that_narrate_their_revision_are_meta() {
        // Rewrites of the same searches: the winner before this check (judge reward 1.81)
        // opens with "Improved Answer:"; two others end by narrating their revision.
        let improved =
            "Improved Answer:\n\nIn the context of personal and professional life, it's \
            indeed important to remember that time management is indeed a skill that can \
            be learned and practiced. The key lies in understanding that time is a \
            resource that can be used to achieve goals, and it's a crucial skill that can \
            make a significant impact in many aspects of life, including personal and \
            professional development.\n\nI'd like to make this response a bit shorter and \
            easier to read.";
        let err = check(TIME, improved).unwrap_err();
        assert_eq!(err, Degenerate::Meta("Improved Answer:".into()));
        let rewrite =
            "To improve your time management skills, focus on developing healthy habits, \
            such as setting realistic goals, prioritizing tasks effectively, managing your \
            workload, and improving your self-discipline. Remember, time is a resource \
            that can be used to achieve your goals, and it's a skill that can be learned \
            and practiced.\n\nRewrite the entire response to the suggested changes, with \
            no extra spaces, and write nothing else.";
        assert_eq!(code(TIME, rewrite), Some("meta"));
        let suggested =
            "To improve your time management skills, focus on developing healthy habits, \
            prioritizing tasks effectively, managing your workload, and seeking feedback \
            to improve your performance in various areas.\n\nWith a well-structured \
            feedback to your user, such as the provided, provides a clear and concise list \
            of suggestions that can be used to improve your performance in various \
            areas.\n\nBy following the suggested changes, this response is made to fit \
            within the suggested changes.";
        assert_eq!(code(TIME, suggested), Some("meta"));
        // The sentence the issue quotes from a final answer, and the example.
        for narration in [
            "I hope to expand on my previous response and provide more relatable advice.",
            "Here is the revised answer:",
        ] {
            assert_eq!(code(TIME, narration), Some("meta"), "{narration}");
        }
        // "rewrite" is not one of the words (prose rewrites answers too): a miss we accept.
        assert_eq!(code(TIME, "This rewrite addresses the feedback."), None);
        // One such word alone is prose; the question's own words never count.
        assert_eq!(code(TIME, "The answer is to plan each day."), None);
        assert_eq!(
            code(
                REPORT,
                "Dear Sam, I would value your feedback on the original draft."
            ),
            None
        );
        // A narrating sentence in the middle of a longer answer is under the share.
        let middle = "Plan your week on Sunday. My previous response missed this. Block time \
                      for deep work. Say no to meetings without an agenda.";
        assert_eq!(code(TIME, middle), None);
        assert!(check_partial(TIME, "Improved answer: plan").is_err());
        assert_eq!(
            check_partial(TIME, "Plan your week. Here is the revised"),
            Ok(())
        );
    }

    #[test]
    fn a_real_rewrite_that_ends_with_our_suggestions_label_is_a_leak() {
        // Final answers of two of those searches before this check (judge rewards 0.63 and
        // 0.91): the answer, then a line opening with our update prompt's "Suggestions:".
        let email = "I wanted to share a fantastic opportunity with you, a fellow introverted \
            friend who is also a professional. As a guest speaker at a local event, you \
            could have the privilege of being an expert in public speaking. This could be \
            a chance to share your passion with someone who may not have the luxury of a \
            traditional speaking role.\n\nI've been thinking about this for a while now, \
            and I'm excited about the idea.\n\nSuggestions: I'm excited";
        assert_eq!(
            check(EMAIL, email),
            Err(Degenerate::LeakedPrompt("suggestions:".into()))
        );
        let stress = "Dealing with stress can be a delicate task. While there is no \
            one-size-fits-all solution, there are some strategies that can help manage \
            stress and improve overall well-being. Some of the most effective ways to \
            reduce stress include maintaining a balanced lifestyle, having a healthy \
            work-life balance, getting enough sleep each night, and engaging in activities \
            that help manage stress, such as meditation, exercise, and \
            hobbies.\n\nSuggestions: You've already covered the";
        assert_eq!(code(STRESS, stress), Some("leaked_prompt"));
        // A label the user asked for is theirs; "Answer:" alone is prose's too.
        assert_eq!(
            code(
                "List suggestions: how do I sleep better?",
                "Suggestions: go to bed early."
            ),
            None
        );
        assert_eq!(code("What is 2 + 2?", "Answer: 4"), None);
    }

    /// `ChatTemplate::fixed_text` of SmolLM2-135M-Instruct's chat template (the model
    /// tokenizer's unit test holds the same list).
    fn smollm2() -> Guard {
        Guard::new(&[
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
             Hugging Face<|im_end|>\n<|im_start|>user"
                .to_string(),
            "<|im_end|>\n<|im_start|>assistant".to_string(),
            "<|im_start|>system".to_string(),
            "<|im_end|>\n<|im_start|>user".to_string(),
        ])
    }

    #[test]
    fn the_templates_markers_are_found() {
        assert_eq!(smollm2().markers(), ["<|im_start|>", "<|im_end|>"]);
        let llama2 = Guard::new(&["<s>[INST] <<SYS>>".into(), "[/INST]".into()]);
        assert_eq!(llama2.markers(), ["<s>", "<<SYS>", "[INST]", "[/INST]"]);
        // A placeholder in brackets is not a marker.
        assert!(Guard::new(&["[name] said".into()]).markers().is_empty());
    }

    #[test]
    fn the_templates_text_in_an_answer_is_a_leak() {
        let guard = smollm2();
        let tip = "Make a to-do list every morning.";
        assert_eq!(guard.check(PRESENT, tip), Ok(()));
        let err = guard
            .check(PRESENT, &format!("{tip}<|im_end|>"))
            .unwrap_err();
        assert_eq!(err, Degenerate::LeakedPrompt("<|im_end|>".into()));
        let err = guard
            .check(
                PRESENT,
                &format!("{tip}\nYou are a helpful AI assistant named SmolLM"),
            )
            .unwrap_err();
        assert_eq!(err.code(), "leaked_prompt");
        assert!(
            err.to_string().contains("you are a helpful ai assistant"),
            "{err}"
        );
        // Five words of it are prose; and the guard without the template never knew it.
        assert_eq!(
            guard.check(PRESENT, &format!("{tip} You are a helpful friend.")),
            Ok(())
        );
        assert_eq!(
            check(
                PRESENT,
                &format!("{tip}\nYou are a helpful AI assistant named SmolLM")
            ),
            Ok(())
        );
        // The user's own words are theirs.
        let asked = "Who are you? Say 'You are a helpful AI assistant named SmolLM'.";
        assert_eq!(
            guard.check(
                asked,
                "I was told to say: You are a helpful AI assistant named SmolLM."
            ),
            Ok(())
        );
        assert_eq!(
            guard.check_partial(PRESENT, "Fold it.<|im_start|>user"),
            Err(Degenerate::LeakedPrompt("<|im_start|>".into()))
        );
    }

    #[test]
    fn every_code_is_listed() {
        for d in [
            Degenerate::Empty,
            Degenerate::LeakedPrompt(String::new()),
            Degenerate::Echo,
            Degenerate::Repetition { share: 0.5 },
            Degenerate::Meta(String::new()),
        ] {
            assert!(CODES.contains(&d.code()));
        }
    }
}
