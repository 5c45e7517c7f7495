//! Incremental detokenization: the text of a growing token list at a constant cost per
//! token (the prefix/read-offset method of TGI: decode a short window of recent tokens
//! twice and append the difference), stop-string matching on the new text only, and
//! [`TextStream`]: the text that may be shown as tokens arrive, holding back the tail a stop
//! string could still claim, so streamed text is always a prefix of the final answer.
//!
//! A token that ends inside a multi-byte character decodes to U+FFFD; its bytes are held
//! back until a later token completes the character, so the text is always valid UTF-8 and
//! a prefix of what decoding every token at once gives.

use super::{ModelError, TokenId, Tokenizer};

/// The decoded text of one sequence's tokens, grown one token at a time.
#[derive(Debug, Default, Clone)]
pub struct IncrementalText {
    prefix_offset: usize,
    read_offset: usize,
    text: String,
}

impl IncrementalText {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in the newest of `tokens` (the whole list so far, one longer than at the last
    /// call); returns the byte offset in [`Self::text`] where the new text starts.
    pub fn push(&mut self, tokenizer: &Tokenizer, tokens: &[TokenId]) -> Result<usize, ModelError> {
        let start = self.text.len();
        let window = tokens.get(self.prefix_offset..).unwrap_or(&[]);
        let read = self
            .read_offset
            .saturating_sub(self.prefix_offset)
            .min(window.len());
        let before = tokenizer.decode(&window[..read])?;
        let after = tokenizer.decode(window)?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(new) = after.get(before.len()..) {
                self.text.push_str(new);
                self.prefix_offset = self.read_offset;
                self.read_offset = tokens.len();
            }
        }
        Ok(start)
    }

    /// Text decoded so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The earliest byte offset in `text` where one of `stops` begins, looking only at matches
/// that end in `text[new_from..]` (earlier text was checked when it arrived).
pub fn find_stop(text: &str, new_from: usize, stops: &[String]) -> Option<usize> {
    let longest = stops.iter().map(String::len).max()?;
    let mut start = new_from
        .saturating_sub(longest.saturating_sub(1))
        .min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let window = &text[start..];
    stops
        .iter()
        .filter_map(|s| window.find(s.as_str()))
        .min()
        .map(|at| start + at)
}

/// One sample's text as its tokens arrive.
pub struct TextStream {
    tokens: Vec<TokenId>,
    text: IncrementalText,
    stops: Vec<String>,
    /// Where the first stop string begins, once one has appeared: nothing from there on is
    /// ever shown (the final answer is cut there).
    stop_at: Option<usize>,
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
            stops: stop.to_vec(),
            stop_at: None,
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
        let new_from = self.text.push(tokenizer, &self.tokens).ok();
        let text = self.text.text();
        if let (None, Some(new_from)) = (self.stop_at, new_from) {
            self.stop_at = find_stop(text, new_from, &self.stops);
        }
        let mut limit = text.len().saturating_sub(self.hold);
        if let Some(stop_at) = self.stop_at {
            limit = limit.min(stop_at);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_string_is_found_across_the_boundary_of_new_text() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop("abc\n", 3, &stops), None);
        assert_eq!(find_stop("abc\n\n", 4, &stops), Some(3));
        assert_eq!(find_stop("xxEN", 2, &stops), None);
        assert_eq!(find_stop("xxEND!", 4, &stops), Some(2));
        // Earlier text is not searched again beyond the longest stop's reach.
        assert_eq!(find_stop("END and more", 10, &stops), None);
        // The window start never splits a character.
        assert_eq!(find_stop("ééEND", 5, &stops), Some(4));
        assert_eq!(find_stop("abc", 0, &[]), None);
    }
}
