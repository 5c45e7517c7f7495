//! Token text for log-prob entries. Streaming a sample's text is [`crate::model::TextStream`].

use crate::model::{TokenId, Tokenizer};

/// The text of one token alone, for log-prob entries (lossy where a token is part of a
/// multi-byte character).
pub fn token_text(tokenizer: &Tokenizer, token: TokenId) -> String {
    tokenizer.decode(&[token]).unwrap_or_default()
}
