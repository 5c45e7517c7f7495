//! What a reward folder says about itself besides `reward_config.json`: the files exporters
//! write (Hugging Face `config.json` and `tokenizer_config.json`, sentence-transformers'
//! `sentence_bert_config.json` and `modules.json`, a head file, a chat template) and the
//! graph's own inputs and outputs.
//!
//! Only facts live here; `resolve` decides what they mean for the config.

use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serde_json::Value;

use super::RewardError;

/// `tokenizer_config.json`'s "no limit" sentinel (`int(1e30)`) and anything like it is not a
/// length: a real model's limit is far below this.
const MAX_PLAUSIBLE_LENGTH: u64 = 1 << 24;

/// Facts read from a folder's files; every field is absent when no file says it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FolderFacts {
    /// `config.json` "architectures" (`LlamaForSequenceClassification`, `BertModel`, …).
    pub architectures: Vec<String>,
    pub config_pad_token_id: Option<u32>,
    pub config_eos_token_id: Option<u32>,
    pub config_bos_token_id: Option<u32>,
    pub max_position_embeddings: Option<usize>,
    /// Labels of a classification head: `id2label`'s size, else `num_labels`.
    pub num_labels: Option<usize>,
    pub hidden_size: Option<usize>,
    /// `tokenizer_config.json` "model_max_length", when it is a real limit.
    pub tokenizer_max_length: Option<usize>,
    /// `tokenizer_config.json` "pad_token" (the token's text).
    pub tokenizer_pad_token: Option<String>,
    /// `tokenizer_config.json` "padding_side".
    pub tokenizer_padding_side: Option<String>,
    /// `sentence_bert_config.json` "max_seq_length".
    pub sentence_max_seq_length: Option<usize>,
    /// The folder is a sentence-transformers model (`modules.json` or
    /// `sentence_bert_config.json`).
    pub sentence_transformers: bool,
    /// `reward_head.json` is present.
    pub head_file: bool,
    /// A chat template is present (`chat_template.jinja`, `tokenizer_config.json` or
    /// `chat_template.json`).
    pub chat_template: bool,
}

/// The head file a hidden-states classifier reads when `reward_config.json` names none.
pub const DEFAULT_HEAD_FILE: &str = "reward_head.json";

impl FolderFacts {
    /// Reads the files of `dir` that exist; a file that exists but is not JSON is an error
    /// naming it (a broken export should not be half-read).
    pub fn read(dir: &Path) -> Result<Self, RewardError> {
        let config = read_json(dir, "config.json")?;
        let tokenizer = read_json(dir, "tokenizer_config.json")?;
        let sentence = read_json(dir, "sentence_bert_config.json")?;
        let id = |v: &Value, key: &str| {
            v.get(key).and_then(|x| match x {
                // `eos_token_id` may be a list: the first is the one the model ends with.
                Value::Array(ids) => ids.first().and_then(Value::as_u64),
                other => other.as_u64(),
            })
        };
        let size = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_u64)
                .filter(|&n| n > 0 && n < MAX_PLAUSIBLE_LENGTH)
                .map(|n| n as usize)
        };
        let token_text = |v: &Value, key: &str| {
            v.get(key).and_then(|t| {
                t.as_str()
                    .or_else(|| t.get("content").and_then(Value::as_str))
                    .map(str::to_owned)
            })
        };
        let num_labels = config
            .get("id2label")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .filter(|&n| n > 0)
            .or_else(|| size(&config, "num_labels"));
        Ok(Self {
            architectures: config
                .get("architectures")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            config_pad_token_id: id(&config, "pad_token_id").map(|n| n as u32),
            config_eos_token_id: id(&config, "eos_token_id").map(|n| n as u32),
            config_bos_token_id: id(&config, "bos_token_id").map(|n| n as u32),
            max_position_embeddings: size(&config, "max_position_embeddings"),
            num_labels,
            hidden_size: size(&config, "hidden_size"),
            tokenizer_max_length: size(&tokenizer, "model_max_length"),
            tokenizer_pad_token: token_text(&tokenizer, "pad_token"),
            tokenizer_padding_side: tokenizer
                .get("padding_side")
                .and_then(Value::as_str)
                .map(str::to_owned),
            sentence_max_seq_length: size(&sentence, "max_seq_length"),
            sentence_transformers: dir.join("modules.json").is_file()
                || dir.join("sentence_bert_config.json").is_file(),
            head_file: dir.join(DEFAULT_HEAD_FILE).is_file(),
            chat_template: dir.join("chat_template.jinja").is_file()
                || tokenizer.get("chat_template").is_some()
                || dir.join("chat_template.json").is_file(),
        })
    }

    /// Whether `config.json` names a sequence-classification architecture.
    pub fn sequence_classification(&self) -> Option<&str> {
        self.architectures
            .iter()
            .find(|a| a.ends_with("ForSequenceClassification"))
            .map(String::as_str)
    }
}

/// `dir/name` as JSON; `Null` when the file does not exist.
fn read_json(dir: &Path, name: &str) -> Result<Value, RewardError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| RewardError::BadConfig {
            path,
            reason: format!("not valid JSON: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(source) => Err(RewardError::Io { path, source }),
    }
}

/// One graph output: its name, its dimensions (`-1` where dynamic) and whether it is float32.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputOutline {
    pub name: String,
    pub dims: Vec<i64>,
    pub f32: bool,
}

/// The graph's input names and outputs, as the session reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphOutline {
    pub inputs: Vec<String>,
    pub outputs: Vec<OutputOutline>,
}

impl GraphOutline {
    pub fn of(session: &Session) -> Self {
        Self {
            inputs: session
                .inputs()
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| {
                    let (dims, f32) = match o.dtype() {
                        ValueType::Tensor { ty, shape, .. } => (
                            shape.iter().copied().collect(),
                            *ty == TensorElementType::Float32,
                        ),
                        _ => (Vec::new(), false),
                    };
                    OutputOutline {
                        name: o.name().to_string(),
                        dims,
                        f32,
                    }
                })
                .collect(),
        }
    }

    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i == name)
    }

    pub fn output(&self, name: &str) -> Option<&OutputOutline> {
        self.outputs.iter().find(|o| o.name == name)
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder holding `files`, unique per test.
    fn folder(test: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tpo-folder-facts-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_an_optimum_sequence_classification_folder() {
        let dir = folder(
            "optimum",
            &[
                (
                    "config.json",
                    r#"{"architectures": ["LlamaForSequenceClassification"], "pad_token_id": 2,
                    "eos_token_id": [2, 0], "max_position_embeddings": 8192,
                    "id2label": {"0": "LABEL_0"}, "hidden_size": 576}"#,
                ),
                (
                    "tokenizer_config.json",
                    r#"{"model_max_length": 8192, "pad_token": {"content": "<|im_end|>"},
                    "chat_template": "{{ messages }}"}"#,
                ),
            ],
        );
        let f = FolderFacts::read(&dir).unwrap();
        assert_eq!(
            f.sequence_classification(),
            Some("LlamaForSequenceClassification")
        );
        assert_eq!(
            (f.config_pad_token_id, f.config_eos_token_id),
            (Some(2), Some(2))
        );
        assert_eq!(
            (f.max_position_embeddings, f.tokenizer_max_length),
            (Some(8192), Some(8192))
        );
        assert_eq!((f.num_labels, f.hidden_size), (Some(1), Some(576)));
        assert_eq!(f.tokenizer_pad_token.as_deref(), Some("<|im_end|>"));
        assert!(f.chat_template && !f.sentence_transformers && !f.head_file);
    }

    #[test]
    fn the_no_limit_sentinel_is_not_a_length_and_sentence_transformers_is_seen() {
        let dir = folder(
            "sentinel",
            &[
                (
                    "tokenizer_config.json",
                    r#"{"model_max_length": 1000000000000000019884624838656}"#,
                ),
                ("sentence_bert_config.json", r#"{"max_seq_length": 256}"#),
            ],
        );
        let f = FolderFacts::read(&dir).unwrap();
        assert_eq!(f.tokenizer_max_length, None);
        assert_eq!(f.sentence_max_seq_length, Some(256));
        assert!(f.sentence_transformers);
    }

    #[test]
    fn a_file_that_is_not_json_is_named() {
        let dir = folder("broken", &[("config.json", "{not json")]);
        let err = FolderFacts::read(&dir).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("not valid JSON"),
            "{err}"
        );
    }
}
