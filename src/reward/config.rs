//! `reward_config.json`: what kind of reward model a folder holds and how to feed it.
//!
//! Every reward folder (exported by a script in `models/`, or written by hand next to an
//! optimum export of a real RM) carries this file; the kind decides which implementation
//! loads it. Validation happens here, once, so the models can trust their config.

use std::path::Path;

use serde::Deserialize;

use super::RewardError;

/// The parsed, validated `reward_config.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    pub kind: RewardKind,
    /// Graph file, relative to the folder.
    #[serde(default = "default_onnx")]
    pub onnx: String,
    /// The graph output the reward is read from.
    pub output: String,
    /// For classifiers: what `output` holds.
    #[serde(default)]
    pub layout: Option<OutputLayout>,
    /// For the hidden-states layout: the head file (`{"weight": [[..]], "bias": [..]}`).
    #[serde(default)]
    pub head: Option<String>,
    /// Which label (row of the head, column of the logits) is the reward.
    #[serde(default)]
    pub label: usize,
    /// Tokens a model input may have.
    pub max_length: usize,
    #[serde(default)]
    pub truncation: Truncation,
    #[serde(default)]
    pub padding_side: PaddingSide,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Whether the tokenizer adds its special tokens (`[CLS]`/`[SEP]`); chat-templated inputs
    /// carry their own.
    #[serde(default)]
    pub add_special_tokens: bool,
    /// For classifiers: how (prompt, response) becomes text.
    #[serde(default)]
    pub input_format: Option<InputFormat>,
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
    /// For similarity models.
    #[serde(default)]
    pub metric: Option<SimilarityMetric>,
    /// Width of the token embeddings, checked against the graph's output.
    #[serde(default)]
    pub hidden_size: Option<usize>,
    /// What the model is, for people reading the folder.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_onnx() -> String {
    "model.onnx".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    Classifier,
    Similarity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLayout {
    /// `[B, T, H]`, scored by the head at the last real token.
    HiddenStates,
    /// `[B, labels]` (optimum's sequence-classification export) or `[B, T, labels]`.
    Logits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Too-long inputs are rejected row by row (a reward of a cut answer would mislead).
    #[default]
    Reject,
    /// Keep the first `max_length` tokens, the last one kept as the tokenizer's end marker.
    Truncate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    #[default]
    Right,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `[user: prompt, assistant: response]` through the chat template (real RMs).
    Chat,
    /// Judging prompts (`judge.user_templates`) through the chat template.
    Judge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMetric {
    /// Cosine of mean-pooled sentence embeddings.
    Cosine,
    /// BERTScore F1 of greedily matched token embeddings.
    Bertscore,
}

/// How the judge asks its question.
#[derive(Debug, Clone, Deserialize)]
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
    /// Reads and validates `dir/reward_config.json`.
    pub fn load(dir: &Path) -> Result<Self, RewardError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| RewardError::Io {
            path: path.clone(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| RewardError::BadConfig {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        config.validate(&path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), RewardError> {
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
