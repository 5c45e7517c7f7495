//! A policy's text side: conversations rendered with its chat template into prompt tokens,
//! and generated tokens back into text.
//!
//! This room is where text becomes tokens and tokens text for a policy; the engine takes
//! and returns token ids only. It does NOT generate, batch or sample (`engine`), and it
//! does not stream text piece by piece ([`super::IncrementalText`] does).

use std::sync::Arc;

use super::{ChatMessage, ChatTemplate, ModelDir, ModelError, TokenId, Tokenizer, TurnPieces};

/// The tokenizer and chat template of one policy folder, with what the template writes
/// between turns and around contents worked out once.
pub struct ChatFormat {
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    /// The template's text between turns, when it renders in pieces.
    turn_pieces: Option<TurnPieces>,
    /// The template's own text around message contents ([`ChatTemplate::fixed_text`]).
    template_text: Vec<String>,
}

impl ChatFormat {
    /// The tokenizer and chat template of `model`. A folder without a chat template still
    /// runs raw prompts; chats fail naming the file.
    pub fn load(model: &ModelDir) -> Result<Self, ModelError> {
        let tokenizer = Arc::new(model.tokenizer()?);
        let template = match model.chat_template() {
            Err(ModelError::MissingFile { path }) => ChatTemplate::missing(path),
            other => other?,
        };
        Ok(Self::new(tokenizer, template))
    }

    pub fn new(tokenizer: Arc<Tokenizer>, template: ChatTemplate) -> Self {
        Self {
            turn_pieces: template.turn_pieces(),
            template_text: template.fixed_text(),
            tokenizer,
            template,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The tokenizer, shared (the engine's scheduler matches stop strings with it).
    pub fn shared_tokenizer(&self) -> Arc<Tokenizer> {
        Arc::clone(&self.tokenizer)
    }

    /// Every piece of text the chat template writes around message contents: its default
    /// system prompt, role headers and special markers ([`ChatTemplate::fixed_text`]), for
    /// the degenerate-candidate guard.
    pub fn template_text(&self) -> &[String] {
        &self.template_text
    }

    /// Token ids of a chat, rendered with the model's template, ending where the assistant
    /// answers.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<TokenId>, ModelError> {
        let text = self.template.render(messages, true)?;
        self.tokenizer.encode(&text)
    }

    /// The prompt of the next turn of a conversation, from token ids: `prompt` (a chat
    /// prompt ending where the assistant answers), the assistant's `reply` tokens as
    /// generated, then a `user` message and the start of the next answer. Every token of
    /// `prompt` and `reply` is kept as is (so the prefix cache matches them exactly); only
    /// the new turn is tokenized. `None` when the template does not render in pieces (see
    /// [`ChatTemplate::turn_pieces`]): re-render the conversation with [`Self::chat_prompt`].
    pub fn continue_chat(
        &self,
        prompt: &[TokenId],
        reply: &[TokenId],
        user: &str,
    ) -> Result<Option<Vec<TokenId>>, ModelError> {
        let Some(pieces) = &self.turn_pieces else {
            return Ok(None);
        };
        let turn = format!("{}{user}{}", pieces.after_reply, pieces.after_user);
        let mut tokens = Vec::with_capacity(prompt.len() + reply.len() + turn.len());
        tokens.extend_from_slice(prompt);
        tokens.extend_from_slice(reply);
        tokens.extend(self.tokenizer.encode(&turn)?);
        Ok(Some(tokens))
    }

    /// Token ids of a one-turn question.
    pub fn question_prompt(&self, question: &str) -> Result<Vec<TokenId>, ModelError> {
        self.chat_prompt(&[ChatMessage::user(question)])
    }

    /// The text of generated `tokens`, cut at a stop string: see [`text_of`].
    pub fn text_of(
        &self,
        tokens: &[TokenId],
        text: Option<&str>,
        stop_at: Option<usize>,
    ) -> Result<String, ModelError> {
        text_of(&self.tokenizer, tokens, text, stop_at)
    }
}

/// The decoded text of generated `tokens`, cut at the stop string that ended them:
/// `text`, the text the generator decoded itself, when a stop matched (`stop_at`, its byte
/// offset, belongs to that text), else one decode of the tokens. An offset without that
/// text (a sample built elsewhere) is cut at the nearest character boundary at or below it,
/// never through a character.
pub fn text_of(
    tokenizer: &Tokenizer,
    tokens: &[TokenId],
    text: Option<&str>,
    stop_at: Option<usize>,
) -> Result<String, ModelError> {
    if let Some(text) = text {
        return Ok(text.to_string());
    }
    let mut text = tokenizer.decode(tokens)?;
    if let Some(at) = stop_at {
        let mut cut = at.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok(text)
}
