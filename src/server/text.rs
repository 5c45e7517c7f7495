//! Streaming text out of token ids: each new token's text as soon as it is whole UTF-8
//! (`model::IncrementalText`, constant work per token), holding back the tail that a stop
//! string could still claim, so streamed text is always a prefix of the final answer.

use crate::model::{IncrementalText, TokenId, Tokenizer};

/// One sample's text as its tokens arrive.
pub struct TextStream {
    tokens: Vec<TokenId>,
    text: IncrementalText,
    /// Bytes of the text already sent.
    sent: usize,
    /// Longest stop string minus one byte: that much of the tail is held back.
    hold: usize,
}

impl TextStream {
    pub fn new(stop: &[String]) -> Self {
        Self {
            tokens: Vec::new(),
            text: IncrementalText::new(),
            sent: 0,
            hold: stop
                .iter()
                .map(|s| s.len())
                .max()
                .unwrap_or(1)
                .saturating_sub(1),
        }
    }

    /// Adds a token; returns the text that may be sent now (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, token: TokenId) -> String {
        self.tokens.push(token);
        // A token the tokenizer cannot decode adds no text; the final answer (decoded by
        // the engine) still reaches the client through `finish`.
        let _ = self.text.push(tokenizer, &self.tokens);
        let text = self.text.text();
        let mut limit = text.len().saturating_sub(self.hold);
        while limit > self.sent && !text.is_char_boundary(limit) {
            limit -= 1;
        }
        if limit <= self.sent {
            return String::new();
        }
        let out = text[self.sent..limit].to_string();
        self.sent = limit;
        out
    }

    /// The rest of `final_text` (the sample's answer, cut at its stop string) not yet sent.
    pub fn finish(&mut self, final_text: &str) -> String {
        let rest = final_text.get(self.sent..).unwrap_or("").to_string();
        self.sent = final_text.len().max(self.sent);
        rest
    }
}

/// The text of one token alone, for log-prob entries (lossy where a token is part of a
/// multi-byte character).
pub fn token_text(tokenizer: &Tokenizer, token: TokenId) -> String {
    tokenizer.decode(&[token]).unwrap_or_default()
}
