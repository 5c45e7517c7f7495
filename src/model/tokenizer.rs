//! Text in and out of token ids: the Hugging Face `tokenizer.json` and the model's chat
//! template (Jinja, rendered with minijinja as TGI and mistral.rs do).

use std::path::Path;

use serde::Serialize;

use super::ModelError;

/// A token id of the policy's vocabulary.
pub type TokenId = u32;

/// One chat message, as the OpenAI API and the chat templates spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
}

/// Tokenizer of a model folder.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile { path });
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::BadTokenizer {
                path,
                reason: e.to_string(),
            })?;
        // A tokenizer.json may carry its own padding and truncation (sentence-transformers'
        // MiniLM pads every text to 128 with [PAD] ids and cuts it there). The engine pads
        // batches itself, with an attention mask, and applies the model's length rule; left
        // in, the tokenizer's padding would be scored as real tokens.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::BadTokenizer {
                path: dir.join("tokenizer.json"),
                reason: e.to_string(),
            })?;
        Ok(Self { inner })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognized,
    /// and nothing is added (chat templates already carry their own markers).
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, ModelError> {
        self.encode_with_specials(text, false)
    }

    /// Token ids of `text`, with the tokenizer's own special tokens (`[CLS]` … `[SEP]`)
    /// added when `add_special_tokens` is set (encoders such as BERT expect them).
    pub fn encode_with_specials(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenId>, ModelError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, with special tokens removed.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String, ModelError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))
    }

    /// The id of the token whose text is exactly `token` (`<|im_end|>`, `[PAD]`).
    pub fn token_id(&self, token: &str) -> Option<TokenId> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The model's chat template, compiled once.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Set when the folder has no template: every render fails naming the file to add
    /// (raw prompts need none, so a folder without one still loads).
    missing: Option<std::path::PathBuf>,
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// Reads the template wherever exporters put it: `chat_template.jinja` (transformers
    /// ≥ 4.47), else `tokenizer_config.json`'s `chat_template` (a string, or a list of named
    /// templates of which `default` is taken), else `chat_template.json` (processors).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_or_null(&config_path)?;
        let jinja_path = dir.join("chat_template.jinja");
        let source = match std::fs::read_to_string(&jinja_path) {
            Ok(text) => text,
            Err(_) => match template_field(&config) {
                Some(t) => t,
                None => template_field(&read_json_or_null(&dir.join("chat_template.json"))?)
                    .ok_or(ModelError::MissingFile { path: jinja_path })?,
            },
        };
        let token = |key: &str| {
            config
                .get(key)
                .and_then(|t| {
                    t.as_str()
                        .or_else(|| t.get("content").and_then(|c| c.as_str()))
                })
                .unwrap_or_default()
                .to_owned()
        };
        Self::from_source(source, token("bos_token"), token("eos_token"))
    }

    pub fn from_source(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, ModelError> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        // Hugging Face templates call Python string methods (`.strip()`, `.startswith()`).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| ModelError::BadTemplate(e.to_string()))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
            missing: None,
        })
    }

    /// The stand-in for a folder without a template (`path` is where one would be): raw
    /// prompts run, and rendering a chat fails with [`ModelError::MissingFile`].
    pub fn missing(path: std::path::PathBuf) -> Self {
        Self {
            env: minijinja::Environment::new(),
            bos_token: String::new(),
            eos_token: String::new(),
            missing: Some(path),
        }
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        if let Some(path) = &self.missing {
            return Err(ModelError::MissingFile { path: path.clone() });
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::BadTemplate(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| ModelError::BadTemplate(e.to_string()))
    }

    /// The template's text between turns, found by rendering marked messages: what follows
    /// an assistant reply up to the next user message's content, and what follows that
    /// content up to where the assistant answers. `None` when the template does not render
    /// a conversation as the one-turn prompt followed by those pieces (then a conversation
    /// must be re-rendered whole).
    pub fn turn_pieces(&self) -> Option<TurnPieces> {
        const FIRST: &str = "\u{E000}first";
        const REPLY: &str = "\u{E001}reply";
        const NEXT: &str = "\u{E002}next";
        let one_turn = self.render(&[ChatMessage::user(FIRST)], true).ok()?;
        let whole = self
            .render(
                &[
                    ChatMessage::user(FIRST),
                    ChatMessage::assistant(REPLY),
                    ChatMessage::user(NEXT),
                ],
                true,
            )
            .ok()?;
        let reply_at = whole.find(REPLY)?;
        let next_at = whole.find(NEXT)?;
        if whole[..reply_at] != one_turn || next_at < reply_at + REPLY.len() {
            return None;
        }
        Some(TurnPieces {
            after_reply: whole[reply_at + REPLY.len()..next_at].to_string(),
            after_user: whole[next_at + NEXT.len()..].to_string(),
        })
    }

    /// Every piece of text the template itself writes around the messages' contents: its
    /// default system prompt, role headers and special markers (`<|im_start|>`), found by
    /// rendering marked messages (as [`Self::turn_pieces`] does) for a one-turn and a
    /// multi-turn conversation, each with and without a system message, and cutting the
    /// renders at the marks. Conversations the template refuses (some raise on a system
    /// message) are skipped. Pieces are trimmed, non-empty and distinct, in the order found.
    pub fn fixed_text(&self) -> Vec<String> {
        const MARKS: [&str; 4] = [
            "\u{E000}system",
            "\u{E001}first",
            "\u{E002}reply",
            "\u{E003}next",
        ];
        let [system, first, reply, next] = MARKS;
        let conversations = [
            vec![ChatMessage::user(first)],
            vec![ChatMessage::system(system), ChatMessage::user(first)],
            vec![
                ChatMessage::user(first),
                ChatMessage::assistant(reply),
                ChatMessage::user(next),
            ],
            vec![
                ChatMessage::system(system),
                ChatMessage::user(first),
                ChatMessage::assistant(reply),
                ChatMessage::user(next),
            ],
        ];
        let mut pieces: Vec<String> = Vec::new();
        for messages in &conversations {
            let Ok(rendered) = self.render(messages, true) else {
                continue;
            };
            let mut rest = rendered.as_str();
            loop {
                let next_mark = MARKS
                    .iter()
                    .filter_map(|m| rest.find(m).map(|at| (at, m.len())))
                    .min();
                let (piece, after) = match next_mark {
                    Some((at, len)) => (&rest[..at], Some(&rest[at + len..])),
                    None => (rest, None),
                };
                let piece = piece.trim();
                if !piece.is_empty() && !pieces.iter().any(|p| p == piece) {
                    pieces.push(piece.to_string());
                }
                match after {
                    Some(after) => rest = after,
                    None => break,
                }
            }
        }
        pieces
    }
}

/// The JSON at `path`, or `Null` when there is no such file.
fn read_json_or_null(path: &Path) -> Result<serde_json::Value, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(_) => Ok(serde_json::Value::Null),
    }
}

/// A `chat_template` field: a string, or a list of `{"name", "template"}` (the `default`).
fn template_field(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(t) => Some(t.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// A chat template's text between turns (see [`ChatTemplate::turn_pieces`]): a conversation
/// continues as `reply + after_reply + user + after_user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnPieces {
    pub after_reply: String,
    pub after_user: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder holding `files`.
    fn folder(test: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tpo-template-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn rendered(dir: &Path) -> String {
        ChatTemplate::load(dir)
            .unwrap()
            .render(&[ChatMessage::user("hi")], false)
            .unwrap()
    }

    #[test]
    fn the_template_is_found_wherever_exporters_put_it() {
        let each = "{% for m in messages %}";
        let jinja = folder(
            "jinja",
            &[
                (
                    "chat_template.jinja",
                    "{% for m in messages %}J:{{ m.content }}{% endfor %}",
                ),
                ("tokenizer_config.json", r#"{"chat_template": "T"}"#),
            ],
        );
        assert_eq!(rendered(&jinja), "J:hi");
        let field = folder(
            "field",
            &[(
                "tokenizer_config.json",
                &format!(r#"{{"chat_template": "{each}T:{{{{ m.content }}}}{{% endfor %}}"}}"#),
            )],
        );
        assert_eq!(rendered(&field), "T:hi");
        let named = folder(
            "named",
            &[(
                "tokenizer_config.json",
                &format!(
                    r#"{{"chat_template": [{{"name": "tool_use", "template": "X"}},
                        {{"name": "default", "template": "{each}D:{{{{ m.content }}}}{{% endfor %}}"}}]}}"#
                ),
            )],
        );
        assert_eq!(rendered(&named), "D:hi");
        let processor = folder(
            "processor",
            &[(
                "chat_template.json",
                &format!(r#"{{"chat_template": "{each}P:{{{{ m.content }}}}{{% endfor %}}"}}"#),
            )],
        );
        assert_eq!(rendered(&processor), "P:hi");
        let none = folder("none", &[("tokenizer_config.json", "{}")]);
        assert!(matches!(
            ChatTemplate::load(&none),
            Err(ModelError::MissingFile { .. })
        ));
    }

    /// SmolLM2-135M-Instruct's `chat_template.jinja`, verbatim.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A Llama-2-style template that raises on a system message it does not expect.
    const NO_SYSTEM: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('no system') }}{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}{% else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn fixed_text_holds_the_default_system_prompt_headers_and_markers() {
        let template =
            ChatTemplate::from_source(SMOLLM2.into(), String::new(), "<|im_end|>".into()).unwrap();
        let pieces = template.fixed_text();
        assert_eq!(
            pieces,
            [
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
                 Hugging Face<|im_end|>\n<|im_start|>user",
                "<|im_end|>\n<|im_start|>assistant",
                "<|im_start|>system",
                "<|im_end|>\n<|im_start|>user",
            ]
        );
    }

    #[test]
    fn fixed_text_skips_conversations_the_template_refuses() {
        let template =
            ChatTemplate::from_source(NO_SYSTEM.into(), "<s>".into(), "</s>".into()).unwrap();
        assert_eq!(
            template.fixed_text(),
            ["<s>[INST]", "[/INST]", "</s>[INST]"]
        );
    }
}
