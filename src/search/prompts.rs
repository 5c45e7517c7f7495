//! Our prompts for TPO's three policy roles (docs/algorithms.md §1, steps 2.2–2.4) and DARWIN's
//! instruction mutation (§3), each one user turn rendered through the policy's own chat
//! template.
//!
//! [`StepConversation`] builds one step as a single growing conversation instead (each call's
//! prompt = the previous prompt + its reply's tokens + a short turn, assembled from token
//! ids, so the prefix cache reuses every previous call). It is **not** what `tpo` runs:
//! measured on the first 50 AlpacaEval instructions (judge-guided TPO D2-N5, 128 tokens) it
//! raised the judge's reward (0.908 vs 0.751) while the held-out similarity of the same final
//! answers fell from 0.479 to 0.273 — the rewrites echoed our turns ("Rewrite Answer A so
//! that…") and critiques instead of answering. It waits for the degenerate-candidate filter.
//!
//! They were written for this project (not taken from the reference) and tried on the
//! embedded SmolLM2-135M-Instruct: short, the instruction last, no worked example (with an
//! example in the prompt the small model copied the example as its answer).
//!
//! The update prompt also *starts the assistant's turn* with the opening tag
//! ([`UPDATE_RESPONSE_PREFIX`]) and stops at the closing tag: without the prefix SmolLM2
//! wrote a tag in 0 of 36 real samples (two questions, two wordings; temperature 0.7), so
//! every update would have been dropped. A model that writes its own tags still parses
//! (see `tags`).

use crate::engine::{Engine, EngineError};
use crate::model::{ChatMessage, TokenId};

use super::tags;

/// Textual loss: the policy, as an evaluator, says why the chosen answer beats the rejected
/// one and what the rejected one lacks, without writing a new answer.
pub const LOSS_TEMPLATE: &str = "Here is a question and two answers to it. Answer A was rated \
better than Answer B.

Question: {query}

Answer A: {chosen}

Answer B: {rejected}

Explain briefly why Answer A is better than Answer B and what Answer B is missing. Do not \
write a new answer.";

/// Textual gradient: from the critique, concrete suggestions to improve the chosen answer
/// (feedback only, no rewrite).
pub const GRADIENT_TEMPLATE: &str = "Question: {query}

Answer: {chosen}

Feedback on the answer: {critique}

Using the feedback, write three short suggestions for improving the answer, as a numbered \
list. Only give the suggestions, do not rewrite the answer.";

/// Update: rewrite the chosen answer following the suggestions, the new answer between the
/// revision tags.
pub const UPDATE_TEMPLATE: &str = "Question: {query}

Current answer: {chosen}

Suggestions: {suggestions}

Rewrite the current answer so that it follows the suggestions. Put the whole improved answer \
between <REVISED_ANSWER> and </REVISED_ANSWER>, and write nothing else.";

/// Textual gradient, the turn after the critique: concrete suggestions to improve the
/// chosen answer (feedback only, no rewrite).
pub const GRADIENT_TURN: &str = "Using your explanation, write three short suggestions for \
improving Answer A, as a numbered list. Only give the suggestions, do not rewrite the answer.";

/// Update, the turn after the suggestions: rewrite the chosen answer following them, the new
/// answer between the revision tags.
pub const UPDATE_TURN: &str = "Rewrite Answer A so that it follows your suggestions. Put the \
whole improved answer between <REVISED_ANSWER> and </REVISED_ANSWER>, and write nothing else.";

/// The start of the assistant's turn for updates: the opening tag, so the policy writes the
/// answer inside it (see the module doc).
pub const UPDATE_RESPONSE_PREFIX: &str = "<REVISED_ANSWER>\n";

/// Mutation (DARWIN): the policy rewords the instruction, keeping what it asks for.
pub const MUTATION_TEMPLATE: &str = "Paraphrase this request. Keep its meaning, change the \
wording.

Request: {instruction}";

/// The start of the assistant's turn for mutations; the variant ends at the line's end.
/// Without it SmolLM2 usually answered the request instead of rewording it (seen on three
/// AlpacaEval-style questions, three seeds each); with it most outputs are rewordings.
pub const MUTATION_RESPONSE_PREFIX: &str = "Paraphrased request:";

/// Fills `{name}` placeholders of `template` in one pass, so text that itself contains
/// `{chosen}` (a user's query, a model's answer) is never substituted again.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, *v))
        });
        match hit {
            Some((close, value)) => {
                out.push_str(value.trim());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The textual-loss prompt's tokens.
pub fn loss_prompt(
    engine: &Engine,
    query: &str,
    chosen: &str,
    rejected: &str,
) -> Result<Vec<TokenId>, EngineError> {
    let text = fill(
        LOSS_TEMPLATE,
        &[("query", query), ("chosen", chosen), ("rejected", rejected)],
    );
    Ok(engine.chat().chat_prompt(&[ChatMessage::user(text)])?)
}

/// The textual-gradient prompt's tokens.
pub fn gradient_prompt(
    engine: &Engine,
    query: &str,
    chosen: &str,
    critique: &str,
) -> Result<Vec<TokenId>, EngineError> {
    let text = fill(
        GRADIENT_TEMPLATE,
        &[("query", query), ("chosen", chosen), ("critique", critique)],
    );
    Ok(engine.chat().chat_prompt(&[ChatMessage::user(text)])?)
}

/// The update prompt's tokens, ending with the assistant's [`UPDATE_RESPONSE_PREFIX`].
pub fn update_prompt(
    engine: &Engine,
    query: &str,
    chosen: &str,
    suggestions: &str,
) -> Result<Vec<TokenId>, EngineError> {
    let text = fill(
        UPDATE_TEMPLATE,
        &[
            ("query", query),
            ("chosen", chosen),
            ("suggestions", suggestions),
        ],
    );
    let mut tokens = engine.chat().chat_prompt(&[ChatMessage::user(text)])?;
    tokens.extend(engine.tokenizer().encode(UPDATE_RESPONSE_PREFIX)?);
    Ok(tokens)
}

/// One TPO step's conversation: critique turn, then suggestion turn, then update turn.
pub struct StepConversation {
    /// The messages so far (to re-render when the template does not render in pieces).
    messages: Vec<ChatMessage>,
    /// The prompt of the next call.
    prompt: Vec<TokenId>,
}

impl StepConversation {
    /// The critique (textual loss) turn: the query, the chosen answer as A, the rejected as B.
    pub fn critique(
        engine: &Engine,
        query: &str,
        chosen: &str,
        rejected: &str,
    ) -> Result<Self, EngineError> {
        let text = fill(
            LOSS_TEMPLATE,
            &[("query", query), ("chosen", chosen), ("rejected", rejected)],
        );
        let messages = vec![ChatMessage::user(text)];
        let prompt = engine.chat().chat_prompt(&messages)?;
        Ok(Self { messages, prompt })
    }

    /// The next call's prompt.
    pub fn prompt(&self) -> &[TokenId] {
        &self.prompt
    }

    /// Moves to the suggestion (textual gradient) turn after the critique `reply`.
    pub fn suggestions(&mut self, engine: &Engine, reply: &Reply<'_>) -> Result<(), EngineError> {
        self.next_turn(engine, reply, GRADIENT_TURN)
    }

    /// Moves to the update turn after the suggestions `reply`; the prompt then ends with the
    /// assistant's [`UPDATE_RESPONSE_PREFIX`].
    pub fn update(&mut self, engine: &Engine, reply: &Reply<'_>) -> Result<(), EngineError> {
        self.next_turn(engine, reply, UPDATE_TURN)?;
        self.prompt
            .extend(engine.tokenizer().encode(UPDATE_RESPONSE_PREFIX)?);
        Ok(())
    }

    fn next_turn(
        &mut self,
        engine: &Engine,
        reply: &Reply<'_>,
        user: &str,
    ) -> Result<(), EngineError> {
        self.messages.push(ChatMessage::assistant(reply.text));
        self.messages.push(ChatMessage::user(user));
        self.prompt = match engine
            .chat()
            .continue_chat(&self.prompt, reply.tokens, user)?
        {
            Some(tokens) => tokens,
            None => engine.chat().chat_prompt(&self.messages)?,
        };
        Ok(())
    }
}

/// A policy reply as generated (its tokens) and as text.
pub struct Reply<'a> {
    pub tokens: &'a [TokenId],
    pub text: &'a str,
}

/// The mutation prompt's tokens, ending with the assistant's [`MUTATION_RESPONSE_PREFIX`].
pub fn mutation_prompt(engine: &Engine, instruction: &str) -> Result<Vec<TokenId>, EngineError> {
    let text = fill(MUTATION_TEMPLATE, &[("instruction", instruction)]);
    let mut tokens = engine.chat().chat_prompt(&[ChatMessage::user(text)])?;
    tokens.extend(engine.tokenizer().encode(MUTATION_RESPONSE_PREFIX)?);
    Ok(tokens)
}

/// Stop strings of the mutation call: a variant is one line.
pub fn mutation_stop() -> Vec<String> {
    vec!["\n".to_string()]
}

/// The text an update's tags are parsed from: the prefix the prompt supplied, then what the
/// policy wrote.
pub fn update_output(generated: &str) -> String {
    format!("{UPDATE_RESPONSE_PREFIX}{generated}")
}

/// Stop strings of the update call: the answer ends at the closing tag.
pub fn update_stop() -> Vec<String> {
    vec![tags::CLOSE_TAG.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_substitutes_each_placeholder_once_and_never_inside_values() {
        let out = fill(
            "Q: {query} A: {chosen} {unknown} {",
            &[("query", " what is {chosen}? "), ("chosen", "42")],
        );
        assert_eq!(out, "Q: what is {chosen}? A: 42 {unknown} {");
    }

    #[test]
    fn every_template_uses_exactly_its_own_placeholders() {
        for (template, names) in [
            (LOSS_TEMPLATE, &["query", "chosen", "rejected"][..]),
            (GRADIENT_TEMPLATE, &["query", "chosen", "critique"][..]),
            (UPDATE_TEMPLATE, &["query", "chosen", "suggestions"][..]),
            (MUTATION_TEMPLATE, &["instruction"][..]),
        ] {
            let values: Vec<(&str, &str)> = names.iter().map(|n| (*n, "X")).collect();
            let filled = fill(template, &values);
            assert!(!filled.contains('{'), "{filled}");
            for name in names {
                assert!(template.contains(&format!("{{{name}}}")), "{name}");
            }
        }
    }

    #[test]
    fn the_update_prompt_names_the_tags_the_parser_reads() {
        assert!(UPDATE_TEMPLATE.contains(tags::OPEN_TAG));
        assert!(UPDATE_TEMPLATE.contains(tags::CLOSE_TAG));
        for turn in [GRADIENT_TURN, UPDATE_TURN] {
            assert!(turn.contains("Answer A") && !turn.contains('{'), "{turn}");
        }
        assert!(UPDATE_TURN.contains(tags::OPEN_TAG) && UPDATE_TURN.contains(tags::CLOSE_TAG));
        assert!(UPDATE_RESPONSE_PREFIX.starts_with(tags::OPEN_TAG));
        assert_eq!(
            tags::extract_revised_answer(&update_output("A better answer.")),
            Ok("A better answer.".to_string())
        );
    }
}
