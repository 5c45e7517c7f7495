//! Incremental detokenization: the text of a growing token list at a constant cost per
//! token (the prefix/read-offset method of TGI: decode a short window of recent tokens
//! twice and append the difference), and stop-string matching on the new text only.
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
