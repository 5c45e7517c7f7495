//! Streaming text out of token ids: each new token's text as soon as it is whole UTF-8
//! (the prefix/read-offset method of TGI: decode a short window twice and emit the
//! difference, so the work per token is constant), holding back the tail that a stop
//! string could still claim, so streamed text is always a prefix of the final answer.

use crate::model::{TokenId, Tokenizer};

/// One sample's text as its tokens arrive.
pub struct TextStream {
    tokens: Vec<TokenId>,
    prefix_offset: usize,
    read_offset: usize,
    /// Text decoded so far.
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    /// Longest stop string minus one byte: that much of the tail is held back.
    hold: usize,
}

impl TextStream {
    pub fn new(stop: &[String]) -> Self {
        Self {
            tokens: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
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
        let before = tokenizer
            .decode(&self.tokens[self.prefix_offset..self.read_offset])
            .unwrap_or_default();
        let after = tokenizer
            .decode(&self.tokens[self.prefix_offset..])
            .unwrap_or_default();
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(new) = after.get(before.len()..) {
                self.text.push_str(new);
                self.prefix_offset = self.read_offset;
                self.read_offset = self.tokens.len();
            }
        }
        let mut limit = self.text.len().saturating_sub(self.hold);
        while limit > self.sent && !self.text.is_char_boundary(limit) {
            limit -= 1;
        }
        if limit <= self.sent {
            return String::new();
        }
        let out = self.text[self.sent..limit].to_string();
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
