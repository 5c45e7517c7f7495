//! Classification-head reward models: the graph's output at each row's last real token,
//! through a head, is the reward.
//!
//! Two output layouts, as real RMs are exported: `hidden_states [B, T, H]` with the head in
//! a file (`[labels, H]` weights + bias), or `logits` (`[B, labels]`, optimum's
//! sequence-classification export, or `[B, T, labels]`). Inputs are rendered through the
//! chat template, either as the conversation itself (`chat`, real RMs) or through judging
//! prompts (`judge`, the embedded SmolLM2 judge: head = unembed("Yes") − unembed("No")).
//!
//! On a GPU session the hidden-states layout pools on the device (`reward::device_pool`):
//! the hidden states stay there and only the rewards come back.

use std::path::Path;

use serde::Deserialize;

use super::config::{InputFormat, OutputLayout, RewardConfig};
use super::pool::{self, Hidden};
use super::sequence::{BatchOutput, DistinctTexts, SequenceModel};
use super::{RewardError, RewardInput, RewardModel, RowError};
use crate::model::{ChatMessage, ChatTemplate};
use crate::runtime::SessionOptions;

/// The head of the hidden-states layout, as `reward_head.json` stores it.
#[derive(Debug, Deserialize)]
struct HeadFile {
    weight: Vec<Vec<f32>>,
    #[serde(default)]
    bias: Vec<f32>,
}

/// The one head row the reward reads.
struct Head {
    weight: Vec<f32>,
    bias: f32,
}

pub struct ClassifierRm {
    model: SequenceModel,
    template: ChatTemplate,
    format: InputFormat,
    judge_env: minijinja::Environment<'static>,
    judge_count: usize,
    assistant_prefix: String,
    head: Option<Head>,
    label: usize,
    name: String,
}

impl ClassifierRm {
    pub fn load(
        dir: &Path,
        config: &RewardConfig,
        session: SessionOptions,
        batch_tokens: usize,
        pool_on_device: bool,
    ) -> Result<Self, RewardError> {
        let model = SequenceModel::load(dir, config, session, batch_tokens)?;
        Self::new(dir, config, model, pool_on_device)
    }

    /// The classifier over an opened graph `model` of the folder `dir`.
    pub fn new(
        dir: &Path,
        config: &RewardConfig,
        mut model: SequenceModel,
        pool_on_device: bool,
    ) -> Result<Self, RewardError> {
        let config_path = dir.join(super::config::CONFIG_FILE);
        let bad = |reason: String| RewardError::BadConfig {
            path: config_path.clone(),
            reason,
        };
        let head = match (config.layout, &config.head) {
            (Some(OutputLayout::HiddenStates), Some(file)) => {
                Some(load_head(&dir.join(file), config.label)?)
            }
            _ => None,
        };
        let format = config
            .input_format
            .ok_or_else(|| bad("input_format is missing".into()))?;
        let mut judge_env = minijinja::Environment::new();
        let mut judge_count = 0;
        let mut assistant_prefix = String::new();
        if let (InputFormat::Judge, Some(judge)) = (format, &config.judge) {
            for (i, source) in judge.user_templates.iter().enumerate() {
                judge_env
                    .add_template_owned(format!("judge{i}"), source.clone())
                    .map_err(|e| bad(format!("judge.user_templates[{i}]: {e}")))?;
            }
            judge_count = judge.user_templates.len();
            assistant_prefix = judge.assistant_prefix.clone();
        }
        if let (Some(head), true) = (&head, pool_on_device) {
            model.pool_on_device(&head.weight, head.bias);
        }
        let template = ChatTemplate::load(dir)?;
        Ok(Self {
            model,
            template,
            format,
            judge_env,
            judge_count,
            assistant_prefix,
            head,
            label: config.label,
            name: dir.display().to_string(),
        })
    }

    /// Whether the hidden states are pooled on the GPU (`reward::device_pool`).
    pub fn pools_on_device(&self) -> bool {
        self.model.device_pool().is_some()
    }

    /// The texts a (prompt, response) is scored through: the conversation, or one per
    /// judging prompt.
    fn texts_of(&self, input: &RewardInput<'_>) -> Result<Vec<String>, RowError> {
        let template_err = |e: crate::model::ModelError| RowError::Template(e.to_string());
        match self.format {
            InputFormat::Chat => {
                let messages = [
                    ChatMessage::user(input.prompt),
                    ChatMessage::assistant(input.response),
                ];
                Ok(vec![self
                    .template
                    .render(&messages, false)
                    .map_err(template_err)?])
            }
            InputFormat::Judge => (0..self.judge_count)
                .map(|i| {
                    let user = self
                        .judge_env
                        .get_template(&format!("judge{i}"))
                        .and_then(|t| {
                            t.render(minijinja::context! {
                                question => input.prompt,
                                answer => input.response,
                            })
                        })
                        .map_err(|e| RowError::Template(e.to_string()))?;
                    let mut text = self
                        .template
                        .render(&[ChatMessage::user(user)], true)
                        .map_err(template_err)?;
                    text.push_str(&self.assistant_prefix);
                    Ok(text)
                })
                .collect(),
        }
    }

    /// The reward of each row of one batch.
    fn pool(&self, batch: &BatchOutput<'_>) -> Result<Vec<f32>, RewardError> {
        let graph_err = |reason: String| RewardError::Graph {
            path: self.name.clone().into(),
            reason,
        };
        let b = batch.rows.len();
        let masks: Vec<&[i64]> = batch.masks.iter().map(Vec::as_slice).collect();
        let last = |mask: &[i64]| {
            pool::last_real_position(mask).ok_or_else(|| graph_err("an empty row".into()))
        };
        match (batch.shape, &self.head) {
            // hidden states [B, T, H] left on the device, pooled there
            (&[bb, t, _], Some(_)) if bb == b && batch.device.is_some() => {
                let (Some(output), Some(device)) = (batch.device, self.model.device_pool()) else {
                    return Err(RewardError::Internal(
                        "a device output without device pooling".into(),
                    ));
                };
                if masks.len() != b || masks.iter().any(|m| m.len() != t) {
                    return Err(graph_err(format!(
                        "masks do not match the output [{b}, {t}]"
                    )));
                }
                device
                    .rewards(output, t, &masks)
                    .map_err(|e| RewardError::Internal(format!("device pooling: {e}")))?
                    .into_iter()
                    .map(|r| r.ok_or_else(|| graph_err("an empty row".into())))
                    .collect()
            }
            // hidden states [B, T, H] through the head file
            (&[bb, t, h], Some(head)) if bb == b => {
                if head.weight.len() != h {
                    return Err(graph_err(format!(
                        "the head has {} columns but the hidden size is {h}",
                        head.weight.len()
                    )));
                }
                let hidden = Hidden::new(batch.data, b, t, h)
                    .ok_or_else(|| graph_err("output size does not match its shape".into()))?;
                hidden.check_masks(&masks).map_err(graph_err)?;
                pool::last_token(&hidden, &masks)
                    .into_iter()
                    .map(|x| {
                        x.map(|x| pool::head_dot(&head.weight, head.bias, x))
                            .ok_or_else(|| graph_err("an empty row".into()))
                    })
                    .collect()
            }
            // logits [B, labels]
            (&[bb, labels], None)
                if bb == b && self.label < labels && batch.data.len() == b * labels =>
            {
                Ok((0..b)
                    .map(|r| batch.data[r * labels + self.label])
                    .collect())
            }
            // logits [B, T, labels]
            (&[bb, t, labels], None) if bb == b && self.label < labels => {
                let hidden = Hidden::new(batch.data, b, t, labels)
                    .ok_or_else(|| graph_err("output size does not match its shape".into()))?;
                hidden.check_masks(&masks).map_err(graph_err)?;
                masks
                    .iter()
                    .enumerate()
                    .map(|(r, m)| Ok(hidden.at(r, last(m)?)[self.label]))
                    .collect()
            }
            (shape, _) => Err(graph_err(format!(
                "output shape {shape:?} does not fit the configured layout ({} rows, label {})",
                b, self.label
            ))),
        }
    }
}

fn load_head(path: &Path, label: usize) -> Result<Head, RewardError> {
    let bad = |reason: String| RewardError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| RewardError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: HeadFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let weight = file
        .weight
        .get(label)
        .cloned()
        .ok_or_else(|| bad(format!("the head has no row for label {label}")))?;
    if weight.is_empty() || weight.iter().any(|w| !w.is_finite()) {
        return Err(bad(format!("head row {label} is empty or not finite")));
    }
    let bias = file.bias.get(label).copied().unwrap_or(0.0);
    Ok(Head { weight, bias })
}

impl RewardModel for ClassifierRm {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Result<f32, RowError>>, RewardError> {
        let texts: Vec<Result<Vec<String>, RowError>> =
            inputs.iter().map(|i| self.texts_of(i)).collect();
        let distinct = DistinctTexts::new(
            texts
                .iter()
                .flat_map(|t| t.as_ref().map(|v| v.iter().map(String::as_str)).into_iter())
                .flatten(),
        );
        let by_text = self.model.run_texts(&distinct.texts, |b| self.pool(b))?;
        // Each input's texts are consecutive in `distinct.index`.
        let mut next = 0;
        Ok(texts
            .iter()
            .map(|t| {
                let t = t.as_ref().map_err(Clone::clone)?;
                let ids = &distinct.index[next..next + t.len()];
                next += t.len();
                let mut sum = 0.0;
                for &i in ids {
                    sum += by_text[i].clone()?;
                }
                Ok(sum / ids.len() as f32)
            })
            .collect())
    }
}
