//! The degenerate-candidate guard: answers that are not answers are dropped before they are
//! scored, with a reason code in the trace. A weak reward model often rates them highly (the
//! embedded judge gave "How do you wrap a present neatly? / Rewrite the answer so that it
//! meets the following criteria:" 0.91, above every real answer), so a search would pick
//! them.
//!
//! Four checks, in this order, each with its named threshold:
//! - [`Degenerate::Empty`] (`empty`): nothing but whitespace and punctuation;
//! - [`Degenerate::LeakedPrompt`] (`leaked_prompt`): the answer contains our own prompt text:
//!   the revision tag, or a run of [`LEAK_MIN_WORDS`] consecutive words of one of our
//!   instruction sentences (`prompts`), or a line opening with [`LEAK_LINE_START_WORDS`] of
//!   them, where the run names a role of the search (answer, rewrite, suggestions …) and is
//!   not in the user's question. We wrote every one of those lines,
//!   so this is an exact check, not a guess about quality;
//! - [`Degenerate::Echo`] (`echo`): the answer only restates the question: it shares a word
//!   with it and adds no word beyond the question's and [`ECHO_FILLER_WORDS`];
//! - [`Degenerate::Repetition`] (`repetition`): the answer loops: at least
//!   [`REPETITION_MAX_SHARE`] of its word [`REPETITION_NGRAM`]-grams repeat an earlier one
//!   (over at least [`REPETITION_MIN_NGRAMS`] of them), e.g. "C-C-C-C…" or one sentence
//!   written three times.
//!
//! Words are runs of letters and digits, lowercased (so "C-C-C" is three words `c`).
//! [`check_partial`] is the subset that stays true as an answer grows (DARWIN judges
//! unfinished answers): a leak or a loop already written cannot be undone, while a partial
//! answer that so far restates the question may go on to answer it.

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
}

impl Degenerate {
    /// Stable name used in traces and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Degenerate::Empty => "empty",
            Degenerate::LeakedPrompt(_) => "leaked_prompt",
            Degenerate::Echo => "echo",
            Degenerate::Repetition { .. } => "repetition",
        }
    }
}

/// The codes [`Degenerate::code`] gives, for callers that read traces.
pub const CODES: &[&str] = &["empty", "leaked_prompt", "echo", "repetition"];

/// Checks a finished `answer` to `query`.
pub fn check(query: &str, answer: &str) -> Result<(), Degenerate> {
    let words = words(answer);
    if words.is_empty() {
        return Err(Degenerate::Empty);
    }
    leak(query, answer, &words)?;
    echo(query, &words)?;
    repetition(&words)
}

/// The checks that hold for an unfinished answer (see the module doc): leaks and loops.
pub fn check_partial(query: &str, answer: &str) -> Result<(), Degenerate> {
    let words = words(answer);
    leak(query, answer, &words)?;
    repetition(&words)
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

fn leak(query: &str, answer: &str, words: &[String]) -> Result<(), Degenerate> {
    let lower = answer.to_lowercase();
    for tag in [tags::OPEN_TAG, tags::CLOSE_TAG] {
        if lower.contains(&tag.to_lowercase()) {
            return Err(Degenerate::LeakedPrompt(tag.to_string()));
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
        prompt_texts().find_map(|text| {
            let ours = self::words(text);
            ours.windows(n)
                .find(|run| {
                    run.iter().any(|w| LEAK_ROLE_WORDS.contains(&w.as_str()))
                        && found(run)
                        && !asked.contains(run)
                })
                .map(|run| run.join(" "))
        })
    };
    let answer_runs = runs(words, LEAK_MIN_WORDS);
    let in_answer = |run: &[String]| answer_runs.contains(run);
    let opens_a_line = |run: &[String]| line_starts.iter().any(|start| start == run);
    match leaked(LEAK_MIN_WORDS, &in_answer)
        .or_else(|| leaked(LEAK_LINE_START_WORDS, &opens_a_line))
    {
        Some(run) => Err(Degenerate::LeakedPrompt(run)),
        None => Ok(()),
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

    #[test]
    fn every_code_is_listed() {
        for d in [
            Degenerate::Empty,
            Degenerate::LeakedPrompt(String::new()),
            Degenerate::Echo,
            Degenerate::Repetition { share: 0.5 },
        ] {
            assert!(CODES.contains(&d.code()));
        }
    }
}
