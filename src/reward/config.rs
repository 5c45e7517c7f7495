//! `reward_config.json`: what kind of reward model a folder holds and how to feed it.
//!
//! Our exports write every field; next to a user's optimum or sentence-transformers export
//! the file is optional or partial (`resolve` infers the rest from the folder). The kind
//! decides which implementation loads it. Validation happens here, once, so the models can
//! trust their config.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RewardError;

/// A reward folder's settled config: `reward_config.json`'s fields where it gives them, the
/// rest inferred from the folder (`resolve`), validated once so the models can trust it.
/// Serialized, it is the `reward_config.json` that says all of it.
#[derive(Debug, Clone, Serialize)]
pub struct RewardConfig {
    pub kind: RewardKind,
    /// Graph file, relative to the folder.
    pub onnx: String,
    /// The graph output the reward is read from.
    pub output: String,
    /// For classifiers: what `output` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<OutputLayout>,
    /// For the hidden-states layout: the head file (`{"weight": [[..]], "bias": [..]}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Which label (row of the head, column of the logits) is the reward.
    pub label: usize,
    /// Tokens a model input may have.
    pub max_length: usize,
    pub truncation: Truncation,
    pub padding_side: PaddingSide,
    pub pad_token_id: u32,
    /// Whether the tokenizer adds its special tokens (`[CLS]`/`[SEP]`); chat-templated inputs
    /// carry their own.
    pub add_special_tokens: bool,
    /// For classifiers: how (prompt, response) becomes text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_format: Option<InputFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeConfig>,
    /// For similarity models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<SimilarityMetric>,
    /// Width of the token embeddings, checked against the graph's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// What the model is, for people reading the folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `reward_config.json` as written: every field optional, since what the folder already
/// says (`config.json`, `tokenizer_config.json`, the graph) fills the rest. A field it
/// gives always wins over an inferred one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfigFile {
    pub kind: Option<RewardKind>,
    pub onnx: Option<String>,
    pub output: Option<String>,
    pub layout: Option<OutputLayout>,
    pub head: Option<String>,
    pub label: Option<usize>,
    pub max_length: Option<usize>,
    pub truncation: Option<Truncation>,
    pub padding_side: Option<PaddingSide>,
    pub pad_token_id: Option<u32>,
    pub add_special_tokens: Option<bool>,
    pub input_format: Option<InputFormat>,
    pub judge: Option<JudgeConfig>,
    pub metric: Option<SimilarityMetric>,
    pub hidden_size: Option<usize>,
    pub description: Option<String>,
}

impl RewardConfigFile {
    /// Reads `dir/reward_config.json`; a folder without one gives the empty file (all
    /// inferred).
    pub fn read(dir: &Path) -> Result<Self, RewardError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(RewardError::Io { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| RewardError::BadConfig {
            path,
            reason: e.to_string(),
        })
    }

    /// The graph file it names, or the default.
    pub fn onnx(&self) -> String {
        self.onnx.clone().unwrap_or_else(default_onnx)
    }
}

fn default_onnx() -> String {
    "model.onnx".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    Classifier,
    Similarity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLayout {
    /// `[B, T, H]`, scored by the head at the last real token.
    HiddenStates,
    /// `[B, labels]` (optimum's sequence-classification export) or `[B, T, labels]`.
    Logits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Too-long inputs are rejected row by row (a reward of a cut answer would mislead).
    #[default]
    Reject,
    /// Keep the first `max_length` tokens, the last one kept as the tokenizer's end marker.
    Truncate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    #[default]
    Right,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `[user: prompt, assistant: response]` through the chat template (real RMs).
    Chat,
    /// Judging prompts (`judge.user_templates`) through the chat template.
    Judge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMetric {
    /// Cosine of mean-pooled sentence embeddings.
    Cosine,
    /// BERTScore F1 of greedily matched token embeddings.
    Bertscore,
}

/// How the judge asks its question.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// Jinja templates of the user message, over `question` and `answer`; the reward is
    /// the mean over them.
    pub user_templates: Vec<String>,
    /// Text appended after the rendered generation prompt.
    #[serde(default)]
    pub assistant_prefix: String,
}

pub const CONFIG_FILE: &str = "reward_config.json";

impl RewardConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), RewardError> {
        let bad = |reason: &str| {
            Err(RewardError::BadConfig {
                path: path.to_path_buf(),
                reason: reason.to_string(),
            })
        };
        if self.max_length < 2 {
            return bad("max_length must be at least 2");
        }
        match self.kind {
            RewardKind::Classifier => {
                match self.layout {
                    None => return bad("a classifier needs \"layout\": hidden_states or logits"),
                    Some(OutputLayout::HiddenStates) if self.head.is_none() => {
                        return bad("the hidden_states layout needs a \"head\" file")
                    }
                    _ => {}
                }
                match (self.input_format, &self.judge) {
                    (None, _) => return bad("a classifier needs \"input_format\": chat or judge"),
                    (Some(InputFormat::Judge), None) => {
                        return bad("input_format judge needs a \"judge\" object")
                    }
                    (Some(InputFormat::Judge), Some(j)) if j.user_templates.is_empty() => {
                        return bad("judge.user_templates is empty")
                    }
                    _ => {}
                }
            }
            RewardKind::Similarity => {
                if self.metric.is_none() {
                    return bad("a similarity model needs \"metric\": cosine or bertscore");
                }
            }
        }
        Ok(())
    }
}
