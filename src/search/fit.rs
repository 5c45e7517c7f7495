//! Whether a search fits the context: the rule every search is admitted by (the server
//! before admission, `search::run` before any work), so no policy call of a search fails
//! halfway for lack of room.
//!
//! Rule: each call's prompt plus `max_new_tokens` must fit the context. A TPO step's largest
//! prompt is the longest of its three templates (loss, gradient, update with its response
//! prefix) around the question and two texts the policy generated, each at most
//! `max_new_tokens` (the chosen and rejected answers, or an answer and a critique or
//! suggestions), plus [`RETOKENIZE_SLACK`] per text. Best-of-N and greedy prompt with the
//! question alone. DARWIN's rewordings are checked as they are made (one that does not fit
//! is dropped), so only its question prompt is checked here.

use crate::engine::{Engine, EngineError};
use crate::model::ChatMessage;

use super::params::{SearchParams, Strategy};
use super::prompts::{
    fill, GRADIENT_TEMPLATE, LOSS_TEMPLATE, UPDATE_RESPONSE_PREFIX, UPDATE_TEMPLATE,
};

/// Tokens a re-tokenized text may take beyond the tokens it was generated as (token
/// boundaries at the edges of a filled-in text can merge or split differently).
pub const RETOKENIZE_SLACK: usize = 4;

/// A search that cannot fit the context, as facts (callers phrase the advice: a flag for
/// the CLI, a request field for the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is up to {peak_prompt} tokens and each call may generate {max_new_tokens} more, \
     but the context holds {context}; with this question at most {fits} new tokens fit"
)]
pub struct DoesNotFit {
    /// Which prompt is the largest ("its critique prompt (…)", "its prompt").
    pub what: &'static str,
    pub peak_prompt: usize,
    pub max_new_tokens: usize,
    pub context: usize,
    /// The largest `max_new_tokens` that fits with this question (0: none does).
    pub fits: usize,
}

/// Checks the rule for a search of `strategy` whose question prompt is `question_prompt`
/// tokens. `render` gives the tokens of one user turn rendered with the policy's chat
/// template; `prefix_tokens` those of [`UPDATE_RESPONSE_PREFIX`].
pub fn check<E>(
    strategy: Strategy,
    render: impl Fn(&str) -> Result<usize, E>,
    prefix_tokens: usize,
    question_prompt: usize,
    max_new_tokens: usize,
    context: usize,
) -> Result<Result<(), DoesNotFit>, E> {
    let (peak_prompt, what, fits) = match strategy {
        Strategy::Tpo => {
            let empty_turn = render("")?;
            let mut overhead = 0;
            for (template, extra) in [
                (LOSS_TEMPLATE, 0),
                (GRADIENT_TEMPLATE, 0),
                (UPDATE_TEMPLATE, prefix_tokens),
            ] {
                let empty = fill(
                    template,
                    &[
                        ("query", ""),
                        ("chosen", ""),
                        ("rejected", ""),
                        ("critique", ""),
                        ("suggestions", ""),
                    ],
                );
                overhead = overhead.max(render(&empty)? + extra);
            }
            // The question prompt's own template tokens are in the overhead already.
            let fixed =
                overhead + question_prompt.saturating_sub(empty_turn) + 2 * RETOKENIZE_SLACK;
            let peak = fixed + 2 * max_new_tokens;
            // Two texts in the prompt and one generated: 3 per max_new_tokens.
            let fits = context.saturating_sub(fixed) / 3;
            (
                peak,
                "its critique prompt (the question and two answers)",
                fits,
            )
        }
        Strategy::BestOfN | Strategy::Greedy | Strategy::Darwin => (
            question_prompt,
            "its prompt",
            context.saturating_sub(question_prompt),
        ),
    };
    if peak_prompt + max_new_tokens <= context {
        return Ok(Ok(()));
    }
    Ok(Err(DoesNotFit {
        what,
        peak_prompt,
        max_new_tokens,
        context,
        fits,
    }))
}

/// [`check`] with `engine`'s chat template and context, for `params` and `question`.
pub fn check_engine(
    engine: &Engine,
    params: &SearchParams,
    question: &str,
) -> Result<Result<(), DoesNotFit>, EngineError> {
    let render = |text: &str| {
        engine
            .chat()
            .chat_prompt(&[ChatMessage::user(text)])
            .map(|t| t.len())
            .map_err(EngineError::from)
    };
    let prefix = engine.tokenizer().encode(UPDATE_RESPONSE_PREFIX)?.len();
    let question_prompt = engine.chat().question_prompt(question)?.len();
    check(
        params.strategy(),
        render,
        prefix,
        question_prompt,
        params.max_new_tokens(),
        engine.max_seq_len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per character, a 10-token chat frame.
    fn render(text: &str) -> Result<usize, ()> {
        Ok(text.chars().count() + 10)
    }

    #[test]
    fn a_tpo_search_needs_room_for_two_answers_in_its_prompt_and_one_more() {
        let empty = |t: &str| {
            fill(
                t,
                &[
                    ("query", ""),
                    ("chosen", ""),
                    ("rejected", ""),
                    ("critique", ""),
                    ("suggestions", ""),
                ],
            )
            .chars()
            .count()
                + 10
        };
        let overhead = empty(LOSS_TEMPLATE)
            .max(empty(GRADIENT_TEMPLATE))
            .max(empty(UPDATE_TEMPLATE) + 3);
        let question = 40 + 10;
        // The question prompt minus an empty turn's 10 tokens is the question.
        let fixed = overhead + 40 + 2 * RETOKENIZE_SLACK;
        let context = fixed + 3 * 100;
        let ok = check(Strategy::Tpo, render, 3, question, 100, context).unwrap();
        assert_eq!(ok, Ok(()));
        let no = check(Strategy::Tpo, render, 3, question, 101, context)
            .unwrap()
            .unwrap_err();
        assert_eq!((no.fits, no.peak_prompt), (100, fixed + 202));
        // Best-of-N needs the question prompt and one answer only.
        assert_eq!(
            check(Strategy::BestOfN, render, 3, question, 101, context).unwrap(),
            Ok(())
        );
        let bon = check(Strategy::BestOfN, render, 3, question, context, context)
            .unwrap()
            .unwrap_err();
        assert_eq!(bon.fits, context - question);
    }
}
