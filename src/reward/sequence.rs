//! A reward graph over token sequences: tokenize (truncating or rejecting by the config),
//! group rows of similar length into padded batches under a token budget, and run one
//! ONNX Runtime call per batch.
//!
//! Both reward kinds (classifier, similarity) run through [`SequenceModel::run_batched`];
//! they differ only in how they pool the output. With [`SequenceModel::pool_on_device`] the
//! output stays in device memory for the GPU pooling kernels (`reward::device_pool`).

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::{DynValue, Tensor};
use parking_lot::Mutex;

use super::config::{PaddingSide, RewardConfig, Truncation};
use super::device_pool::DeviceHeadPool;
use super::{RewardError, RowError};
use crate::gpu::DeviceBuffer;
use crate::model::{TokenId, Tokenizer};
use crate::runtime::{self, Device, RuntimeError, SessionOptions};

/// Padded tokens per ONNX Runtime call. On two CPU cores prefill is compute-bound already at
/// batch 1, and batches much larger than this measured slower (cache spills).
pub const DEFAULT_BATCH_TOKENS: usize = 1024;

/// One batch's output, as the graph returned it, with the masks it was fed.
pub struct BatchOutput<'a> {
    /// Indices (into the sequences given to `run_batched`) of this batch's rows, in order.
    pub rows: &'a [usize],
    pub masks: &'a [Vec<i64>],
    pub shape: &'a [usize],
    /// The output on the host (empty when it stayed on the device).
    pub data: &'a [f32],
    /// The output `[B, T, H]` in device memory, when the model pools on the device.
    pub device: Option<&'a DeviceBuffer>,
}

/// What one graph run gives back: the masks it was fed, the output's shape, and the output
/// on the host or on the device.
struct RunOutput {
    masks: Vec<Vec<i64>>,
    shape: Vec<usize>,
    data: Vec<f32>,
    device: Option<DeviceBuffer>,
}

/// Which optional inputs the graph takes.
#[derive(Debug, Clone, Copy)]
struct GraphInputs {
    position_ids: bool,
    token_type_ids: bool,
}

/// The session, tokenizer and input conventions of one reward graph.
pub struct SequenceModel {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    inputs: GraphInputs,
    output: String,
    max_length: usize,
    truncation: Truncation,
    padding_side: PaddingSide,
    pad_token_id: TokenId,
    add_special_tokens: bool,
    batch_tokens: usize,
    /// The session's device, and whether the graph's output is float32 (what device pooling
    /// needs).
    device: Device,
    output_f32: bool,
    device_pool: Option<DeviceHeadPool>,
}

impl SequenceModel {
    /// Opens the graph `config` names in `dir` and checks it against the config.
    pub fn load(
        dir: &Path,
        config: &RewardConfig,
        session: SessionOptions,
        batch_tokens: usize,
    ) -> Result<Self, RewardError> {
        let onnx = dir.join(&config.onnx);
        if !onnx.is_file() {
            return Err(RewardError::BadConfig {
                path: dir.join(super::config::CONFIG_FILE),
                reason: format!("the graph file {} is missing", onnx.display()),
            });
        }
        let device = session.device;
        let session = runtime::open_session(&onnx, session)?;
        Self::open(
            dir,
            config,
            session,
            device,
            Tokenizer::load(dir)?,
            batch_tokens,
        )
    }

    /// Wraps an opened `session` of the folder `dir` (on `session_device`), checking its
    /// inputs and output against `config`.
    pub fn open(
        dir: &Path,
        config: &RewardConfig,
        session: Session,
        session_device: Device,
        tokenizer: Tokenizer,
        batch_tokens: usize,
    ) -> Result<Self, RewardError> {
        let onnx = dir.join(&config.onnx);
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let graph_err = |reason: String| RewardError::Graph {
            path: onnx.clone(),
            reason,
        };
        for required in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == required) {
                return Err(graph_err(format!("the graph has no `{required}` input")));
            }
        }
        if let Some(other) = names.iter().find(|n| {
            !matches!(
                n.as_str(),
                "input_ids" | "attention_mask" | "position_ids" | "token_type_ids"
            )
        }) {
            return Err(graph_err(format!(
                "the graph takes an input `{other}` that a reward model does not feed"
            )));
        }
        if !session.outputs().iter().any(|o| o.name() == config.output) {
            return Err(graph_err(format!(
                "the graph has no output `{}` (reward_config.json \"output\")",
                config.output
            )));
        }
        let output_f32 = runtime::output_is_f32(&session, &config.output);
        let inputs = GraphInputs {
            position_ids: names.iter().any(|n| n == "position_ids"),
            token_type_ids: names.iter().any(|n| n == "token_type_ids"),
        };
        if config.padding_side == PaddingSide::Left && !inputs.position_ids {
            return Err(graph_err(
                "left padding needs a `position_ids` input (without it the graph would number \
                 the padding as positions); use \"padding_side\": \"right\""
                    .into(),
            ));
        }
        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
            inputs,
            output: config.output.clone(),
            max_length: config.max_length,
            truncation: config.truncation,
            padding_side: config.padding_side,
            pad_token_id: config.pad_token_id,
            add_special_tokens: config.add_special_tokens,
            batch_tokens: batch_tokens.max(1),
            device: session_device,
            output_f32,
            device_pool: None,
        })
    }

    /// On a GPU session, keeps the output `[B, T, H]` on the device and pools it there with
    /// the head row `weight`, `bias` (when the kernels load; otherwise nothing changes and the
    /// reason is logged). Returns whether pooling now runs on the device.
    pub fn pool_on_device(&mut self, weight: &[f32], bias: f32) -> bool {
        self.device_pool = DeviceHeadPool::for_session(self.device, self.output_f32, weight, bias);
        self.device_pool.is_some()
    }

    /// The device pooling, when [`Self::pool_on_device`] enabled it.
    pub fn device_pool(&self) -> Option<&DeviceHeadPool> {
        self.device_pool.as_ref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`, truncated or rejected by the config's rule.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, RowError> {
        let mut ids = self
            .tokenizer
            .encode_with_specials(text, self.add_special_tokens)
            .map_err(|e| RowError::Tokenize(e.to_string()))?;
        if ids.is_empty() {
            return Err(RowError::Empty);
        }
        if ids.len() > self.max_length {
            match self.truncation {
                Truncation::Reject => {
                    return Err(RowError::TooLong {
                        tokens: ids.len(),
                        limit: self.max_length,
                    })
                }
                Truncation::Truncate => {
                    // Keep the end marker ([SEP]) last when the tokenizer added one, as
                    // sentence-transformers does.
                    let last = ids[ids.len() - 1];
                    ids.truncate(self.max_length);
                    if self.add_special_tokens {
                        ids[self.max_length - 1] = last;
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Runs every sequence (none empty) in length-grouped batches; `pool` turns one batch's
    /// output into one value per row. Returns the values in the sequences' order.
    pub fn run_batched<T>(
        &self,
        seqs: &[Vec<TokenId>],
        mut pool: impl FnMut(&BatchOutput<'_>) -> Result<Vec<T>, RewardError>,
    ) -> Result<Vec<T>, RewardError> {
        let mut out: Vec<Option<T>> = (0..seqs.len()).map(|_| None).collect();
        for rows in plan_batches(seqs, self.batch_tokens) {
            let run = self.run_one(seqs, &rows)?;
            let values = pool(&BatchOutput {
                rows: &rows,
                masks: &run.masks,
                shape: &run.shape,
                data: &run.data,
                device: run.device.as_ref(),
            })?;
            if let (Some(buffer), Some(device)) = (run.device, &self.device_pool) {
                device.recycle(buffer);
            }
            if values.len() != rows.len() {
                return Err(RewardError::Internal(format!(
                    "pooling returned {} values for {} rows",
                    values.len(),
                    rows.len()
                )));
            }
            for (&row, v) in rows.iter().zip(values) {
                out[row] = Some(v);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| RewardError::Internal("a row was not scored".into())))
            .collect()
    }

    /// Encodes every text, runs those that encode, and pools them: one result per text, a
    /// text that could not be encoded (too long, empty) carrying its reason.
    pub fn run_texts<T>(
        &self,
        texts: &[&str],
        pool: impl FnMut(&BatchOutput<'_>) -> Result<Vec<T>, RewardError>,
    ) -> Result<Vec<Result<T, RowError>>, RewardError> {
        let encoded: Vec<Result<Vec<TokenId>, RowError>> =
            texts.iter().map(|t| self.encode(t)).collect();
        let seqs: Vec<Vec<TokenId>> = encoded.iter().filter_map(|e| e.clone().ok()).collect();
        let mut pooled = self.run_batched(&seqs, pool)?.into_iter();
        Ok(encoded
            .into_iter()
            .map(|e| {
                e.and_then(|_| {
                    pooled
                        .next()
                        .ok_or_else(|| RowError::Internal("a text was not run".into()))
                })
            })
            .collect())
    }

    /// Pads the batch's rows the configured way and runs the graph once.
    fn run_one(&self, seqs: &[Vec<TokenId>], rows: &[usize]) -> Result<RunOutput, RewardError> {
        self.run_padded(seqs, rows, self.padding_side, self.pad_token_id)
    }

    /// Runs `rows` of `seqs` as one batch padded on `side` with `pad`, the output brought to
    /// the host: the self-check's probe (`reward::self_check`).
    pub(super) fn probe(
        &self,
        seqs: &[Vec<TokenId>],
        rows: &[usize],
        side: PaddingSide,
        pad: TokenId,
    ) -> Result<(Vec<usize>, Vec<f32>), RewardError> {
        if self.device_pool.is_some() {
            return Err(RewardError::Internal(
                "the self-check runs before device pooling is enabled".into(),
            ));
        }
        let run = self.run_padded(seqs, rows, side, pad)?;
        Ok((run.shape, run.data))
    }

    /// The padding side and pad id the config asks for.
    pub fn padding(&self) -> (PaddingSide, TokenId) {
        (self.padding_side, self.pad_token_id)
    }

    /// Whether the graph takes `position_ids` (without it only right padding keeps positions).
    pub fn takes_position_ids(&self) -> bool {
        self.inputs.position_ids
    }

    fn run_padded(
        &self,
        seqs: &[Vec<TokenId>],
        rows: &[usize],
        padding_side: PaddingSide,
        pad_token_id: TokenId,
    ) -> Result<RunOutput, RewardError> {
        let b = rows.len();
        let t = rows.iter().map(|&r| seqs[r].len()).max().unwrap_or(0);
        let mut ids = vec![i64::from(pad_token_id); b * t];
        let mut positions = vec![0i64; b * t];
        let mut masks = Vec::with_capacity(b);
        for (i, &r) in rows.iter().enumerate() {
            let seq = &seqs[r];
            let offset = match padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => t - seq.len(),
            };
            let mut mask = vec![0i64; t];
            for (j, &tok) in seq.iter().enumerate() {
                ids[i * t + offset + j] = i64::from(tok);
                positions[i * t + offset + j] = j as i64;
                mask[offset + j] = 1;
            }
            masks.push(mask);
        }
        let ort_err = |e: ort::Error| RewardError::Runtime(RuntimeError::Ort(e));
        let tensor = |v: Vec<i64>| -> Result<DynValue, RewardError> {
            Ok(Tensor::from_array(([b, t], v)).map_err(ort_err)?.into_dyn())
        };
        let mut inputs: Vec<(&str, DynValue)> = vec![
            ("input_ids", tensor(ids)?),
            ("attention_mask", tensor(masks.concat())?),
        ];
        if self.inputs.position_ids {
            inputs.push(("position_ids", tensor(positions)?));
        }
        if self.inputs.token_type_ids {
            inputs.push(("token_type_ids", tensor(vec![0; b * t])?));
        }
        let mut session = self.session.lock();
        if let Some(device) = &self.device_pool {
            let buffer = device
                .output_buffer(b, t)
                .map_err(|e| RewardError::Internal(format!("device output: {e}")))?;
            let shape = [b as i64, t as i64, device.dim() as i64];
            // SAFETY: `buffer` holds at least b × t × dim float32s on the session's GPU
            // (`output_buffer` guarantees it), which `device.memory()` describes; nothing else reads or
            // writes it until the run below returns, and the view is dropped with `binding`
            // before the buffer is handed on.
            let mut view = unsafe {
                runtime::alias_tensor(
                    buffer.ptr() as *mut std::ffi::c_void,
                    runtime::AliasElement::F32,
                    &shape,
                    device.memory(),
                )
            }?;
            let mut binding = session.create_binding().map_err(ort_err)?;
            for (name, value) in &inputs {
                binding.bind_input(*name, value).map_err(ort_err)?;
            }
            binding
                .bind_output(self.output.as_str(), &mut view)
                .map_err(ort_err)?;
            session.run_binding(&binding).map_err(ort_err)?;
            drop(binding);
            drop(view);
            return Ok(RunOutput {
                masks,
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: Vec::new(),
                device: Some(buffer),
            });
        }
        let outputs = session.run(inputs).map_err(ort_err)?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| RewardError::Internal(format!("no output `{}`", self.output)))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok(RunOutput {
            masks,
            shape,
            data: data.to_vec(),
            device: None,
        })
    }
}

/// Groups sequence indices into batches: sorted by length so rows of a batch pad little,
/// each batch's padded size (rows × longest) within `budget` tokens (a longer single row
/// runs alone).
pub fn plan_batches(seqs: &[Vec<TokenId>], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so this row is the batch's longest.
        let padded = (current.len() + 1) * seqs[i].len();
        if !current.is_empty() && padded > budget {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Distinct texts of a call, so each is tokenized and run once (a reference shared by
/// chosen and rejected, identical answers).
pub struct DistinctTexts<'a> {
    pub texts: Vec<&'a str>,
    /// For every input, the index of its text in `texts`.
    pub index: Vec<usize>,
}

impl<'a> DistinctTexts<'a> {
    pub fn new(all: impl IntoIterator<Item = &'a str>) -> Self {
        let mut seen: HashMap<&'a str, usize> = HashMap::new();
        let mut texts = Vec::new();
        let index = all
            .into_iter()
            .map(|t| {
                *seen.entry(t).or_insert_with(|| {
                    texts.push(t);
                    texts.len() - 1
                })
            })
            .collect();
        Self { texts, index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(lens: &[usize]) -> Vec<Vec<TokenId>> {
        lens.iter().map(|&n| vec![1; n]).collect()
    }

    #[test]
    fn batches_cover_every_row_once_within_the_budget() {
        let s = seqs(&[5, 300, 7, 120, 6, 900, 2000, 8]);
        let batches = plan_batches(&s, 1024);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..s.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| s[i].len()).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 1024, "{b:?}");
        }
        // the short rows share one batch
        assert!(batches.iter().any(|b| b.len() >= 4));
        // the 2000-token row runs alone
        assert!(batches.contains(&vec![6]));
    }

    #[test]
    fn distinct_texts_maps_repeats_to_one_entry() {
        let d = DistinctTexts::new(["a", "b", "a", "c", "b"]);
        assert_eq!(d.texts, vec!["a", "b", "c"]);
        assert_eq!(d.index, vec![0, 1, 0, 2, 1]);
    }
}
