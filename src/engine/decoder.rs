//! One forward step of the decoder graph over a contiguous range of KV slots.
//!
//! The decoder owns the ONNX Runtime session; the caller owns the [`KvArena`] and says which
//! slots take part. Past and present KV tensors are views of the arena bound through
//! `IoBinding`, so ONNX Runtime appends the new rows in place and nothing is copied.
//!
//! Shapes of one step (B rows, S = the longest new-token run):
//! - fresh prompts (every row's past is 0): right-padded `[B, S]`, any B;
//! - decode (S = 1): any B, ragged past lengths;
//! - a continuation with S > 1 over an existing past: B must be 1 (a GroupQueryAttention rule).
//!
//! A graph with the optional `num_logits_to_keep` input (our export has it; onnxruntime-genai
//! leaves it at its default 0 = every position) is asked for the last positions only when a
//! multi-token step needs just each row's last one (the window from the shortest row's last
//! token on), so prefill skips the 49,152-row unembedding for the other prompt positions.

use std::time::{Duration, Instant};

use ort::memory::MemoryInfo;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use super::kv::{KvArena, KvDtype, KvPlacement, KvShape, SlotId};
use super::EngineError;
use crate::model::{DecoderConfig, ModelDir, TokenId};
use crate::runtime;

/// The new tokens of one row and how many tokens its slot already caches.
#[derive(Debug, Clone, Copy)]
pub struct RowInput<'a> {
    pub past_len: usize,
    pub tokens: &'a [TokenId],
}

/// Which logits a step returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// `[B, V]`: each row's last real position (what sampling needs).
    Last,
    /// `[B, S, V]`: every position (teacher-forced scoring).
    All,
}

/// Session options a decoder is built with (device, threads).
pub type DecoderOptions = runtime::SessionOptions;

/// A policy graph loaded into an ONNX Runtime session.
pub struct Decoder {
    session: Session,
    config: DecoderConfig,
    names: IoNames,
    /// Element type of the graph's `past_key_values.*` (float32, or float16 for an f16 export).
    kv_dtype: KvDtype,
    /// Whether the graph's logits are float32 (an f16 export casts them back to float32).
    logits_f32: bool,
    last_run_time: Duration,
}

struct IoNames {
    past: Vec<(String, String)>,
    present: Vec<(String, String)>,
    /// The optional `num_logits_to_keep` input (0 = every position, k = the last k of each
    /// row), when the graph has it: prefill then computes the unembedding for one row only.
    logits_to_keep: Option<String>,
}

/// The graph input that limits the logits to the last positions (Hugging Face's name).
const LOGITS_TO_KEEP: &str = "num_logits_to_keep";

impl Decoder {
    pub fn load(model: &ModelDir, options: DecoderOptions) -> Result<Self, EngineError> {
        let config = model.config.clone();
        if !config.past_present_share_buffer {
            return Err(EngineError::InvalidConfig(format!(
                "{}: only graphs whose past and present KV share one buffer \
                 (genai_config search.past_present_share_buffer = true) are supported",
                model.path.display()
            )));
        }
        let onnx = model.onnx_path();
        let session = runtime::open_session(&onnx, options)?;
        let names = IoNames {
            past: (0..config.num_layers)
                .map(|l| (config.past_key_name(l), config.past_value_name(l)))
                .collect(),
            present: (0..config.num_layers)
                .map(|l| (config.present_key_name(l), config.present_value_name(l)))
                .collect(),
            // An input with a default is listed among the overridable initializers.
            logits_to_keep: (session.inputs().iter().any(|i| i.name() == LOGITS_TO_KEEP)
                || session
                    .overridable_initializers()
                    .iter()
                    .any(|i| i.name() == LOGITS_TO_KEEP))
            .then(|| LOGITS_TO_KEEP.to_string()),
        };
        let kv_dtype = kv_dtype_of(&session, &names.past[0].0)?;
        let logits_f32 = runtime::output_is_f32(&session, &config.logits_name);
        let decoder = Self {
            session,
            config,
            names,
            kv_dtype,
            logits_f32,
            last_run_time: Duration::ZERO,
        };
        decoder.check_graph_io()?;
        Ok(decoder)
    }

    /// The graph must have the inputs and outputs the config names.
    fn check_graph_io(&self) -> Result<(), EngineError> {
        let inputs: Vec<&str> = self.session.inputs().iter().map(|o| o.name()).collect();
        let outputs: Vec<&str> = self.session.outputs().iter().map(|o| o.name()).collect();
        let c = &self.config;
        let mut wanted_in = vec![c.input_ids_name.clone(), c.attention_mask_name.clone()];
        let mut wanted_out = vec![c.logits_name.clone()];
        for ((pk, pv), (qk, qv)) in self.names.past.iter().zip(&self.names.present) {
            wanted_in.extend([pk.clone(), pv.clone()]);
            wanted_out.extend([qk.clone(), qv.clone()]);
        }
        let missing: Vec<String> = wanted_in
            .iter()
            .filter(|n| !inputs.contains(&n.as_str()))
            .chain(wanted_out.iter().filter(|n| !outputs.contains(&n.as_str())))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidConfig(format!(
                "the ONNX graph lacks inputs/outputs named in genai_config.json: {}",
                missing.join(", ")
            )))
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether the graph takes `num_logits_to_keep`, so prefill computes one row of logits.
    pub fn limits_prefill_logits(&self) -> bool {
        self.names.logits_to_keep.is_some()
    }

    /// Time the last [`Decoder::step`] spent inside ONNX Runtime's `run`.
    pub fn last_run_time(&self) -> Duration {
        self.last_run_time
    }

    /// KV geometry for an arena of `max_len` positions per slot.
    pub fn kv_shape(&self, max_len: usize) -> KvShape {
        KvShape {
            layers: self.config.num_layers,
            kv_heads: self.config.num_kv_heads,
            max_len,
            head_dim: self.config.head_size,
            dtype: self.kv_dtype,
        }
    }

    /// Runs one step for `rows` over slots `lo..lo + rows.len()` and returns logits
    /// (`[B, V]` or `[B, S, V]`, row-major).
    pub fn step(
        &mut self,
        arena: &mut KvArena,
        lo: SlotId,
        rows: &[RowInput<'_>],
        wanted: LogitsWanted,
    ) -> Result<Vec<f32>, EngineError> {
        self.run_step(arena, lo, rows, wanted, None)
    }

    /// Whether [`Decoder::step_to_device`] can run: the graph's logits are float32.
    pub fn logits_are_f32(&self) -> bool {
        self.logits_f32
    }

    /// A decode step (one new token per row) over a device arena whose `[B, 1, V]` float32
    /// logits ONNX Runtime writes to device address `logits`, so they never leave the GPU.
    ///
    /// # Safety
    /// `logits` must address at least `rows.len() * vocab_size` float32s of device memory on
    /// the arena's GPU that nothing else reads or writes until this call returns. ONNX
    /// Runtime synchronizes its CUDA stream at the end of a run (we never set
    /// `disable_synchronize_execution_providers`), so the logits are complete on return.
    pub unsafe fn step_to_device(
        &mut self,
        arena: &mut KvArena,
        lo: SlotId,
        rows: &[RowInput<'_>],
        logits: u64,
    ) -> Result<(), EngineError> {
        if rows.iter().any(|r| r.tokens.len() != 1) {
            return Err(EngineError::Internal(
                "device logits are for decode steps (one new token per row)".into(),
            ));
        }
        if !matches!(arena.placement(), KvPlacement::Cuda(_)) || !self.logits_f32 {
            return Err(EngineError::Internal(
                "device logits need a device KV arena and float32 logits".into(),
            ));
        }
        self.run_step(arena, lo, rows, LogitsWanted::Last, Some(logits))
            .map(|_| ())
    }

    /// The step; with `device_logits`, the logits go to that device address (see
    /// [`Decoder::step_to_device`]) and the returned vector is empty.
    fn run_step(
        &mut self,
        arena: &mut KvArena,
        lo: SlotId,
        rows: &[RowInput<'_>],
        wanted: LogitsWanted,
        device_logits: Option<u64>,
    ) -> Result<Vec<f32>, EngineError> {
        let b = rows.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        if lo.0 + b > arena.slots() {
            return Err(EngineError::Internal(format!(
                "step over slots {}..{} but the arena has {}",
                lo.0,
                lo.0 + b,
                arena.slots()
            )));
        }
        let s = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        if s == 0 || rows.iter().any(|r| r.tokens.is_empty()) {
            return Err(EngineError::Internal("a step row has no new tokens".into()));
        }
        if s > 1 && b > 1 && rows.iter().any(|r| r.past_len > 0) {
            return Err(EngineError::Internal(
                "a multi-token step over an existing past must have batch 1".into(),
            ));
        }
        for r in rows {
            arena.check_len(r.past_len + r.tokens.len())?;
        }
        let total = rows
            .iter()
            .map(|r| r.past_len + r.tokens.len())
            .max()
            .unwrap_or(0);

        let pad = i64::from(self.config.pad_token_id);
        let mut ids = vec![pad; b * s];
        let mut mask = vec![0i64; b * total];
        for (i, r) in rows.iter().enumerate() {
            for (j, &t) in r.tokens.iter().enumerate() {
                ids[i * s + j] = i64::from(t);
            }
            mask[i * total..i * total + r.past_len + r.tokens.len()].fill(1);
        }
        let ort_err = |e: ort::Error| EngineError::Runtime(runtime::RuntimeError::Ort(e));
        let ids = Tensor::from_array(([b, s], ids)).map_err(ort_err)?;
        let mask = Tensor::from_array(([b, total], mask)).map_err(ort_err)?;

        let mut binding = self.session.create_binding().map_err(ort_err)?;
        binding
            .bind_input(&self.config.input_ids_name, &ids)
            .map_err(ort_err)?;
        binding
            .bind_input(&self.config.attention_mask_name, &mask)
            .map_err(ort_err)?;
        if let Some(name) = &self.config.position_ids_name {
            let positions: Vec<i64> = rows
                .iter()
                .flat_map(|r| (r.past_len..r.past_len + s).map(|p| p as i64))
                .collect();
            let pos = Tensor::from_array(([b, s], positions)).map_err(ort_err)?;
            binding.bind_input(name, &pos).map_err(ort_err)?;
        }
        let shape = arena.shape();
        if shape.dtype != self.kv_dtype {
            return Err(EngineError::Internal(format!(
                "the KV arena holds {} but the graph's KV is {}",
                shape.dtype.name(),
                self.kv_dtype.name()
            )));
        }
        let element = match shape.dtype {
            KvDtype::F32 => runtime::AliasElement::F32,
            KvDtype::F16 => runtime::AliasElement::F16,
        };
        let memory = match arena.placement() {
            KvPlacement::Host => MemoryInfo::default(),
            KvPlacement::Cuda(ordinal) => runtime::cuda_memory_info(ordinal)?,
        };
        let view_shape = [
            b as i64,
            shape.kv_heads as i64,
            shape.max_len as i64,
            shape.head_dim as i64,
        ];
        for layer in 0..self.config.num_layers {
            let (k_ptr, v_ptr) = arena.layer_ptrs(layer, lo);
            // SAFETY: the pointers address slots lo..lo+b of this layer's buffers, which hold
            // b * kv_heads * max_len * head_dim elements of the arena's type (checked above:
            // lo + b <= slots, and the type is the graph's) in the memory `memory` describes
            // (the arena's placement). The arena is borrowed mutably for this whole call and
            // its buffers never move, so nothing else touches the memory while ONNX Runtime
            // uses the views; the views and the binding are dropped before this returns.
            let mut k = unsafe { runtime::alias_tensor(k_ptr, element, &view_shape, &memory) }?;
            let mut v = unsafe { runtime::alias_tensor(v_ptr, element, &view_shape, &memory) }?;
            let (past_k, past_v) = &self.names.past[layer];
            let (present_k, present_v) = &self.names.present[layer];
            binding.bind_input(past_k, &k).map_err(ort_err)?;
            binding.bind_input(past_v, &v).map_err(ort_err)?;
            binding.bind_output(present_k, &mut k).map_err(ort_err)?;
            binding.bind_output(present_v, &mut v).map_err(ort_err)?;
        }
        // Only the last positions' logits when that is all a multi-token step needs: the
        // window of each row's last `keep` positions, `keep = S - shortest + 1`, holds every
        // row's last real token (rows are right-padded, so row i's is at `len_i - 1`).
        let shortest = rows.iter().map(|r| r.tokens.len()).min().unwrap_or(s);
        let keep = if wanted == LogitsWanted::Last && s > 1 && self.names.logits_to_keep.is_some() {
            s - shortest + 1
        } else {
            s
        };
        if let Some(name) = &self.names.logits_to_keep {
            // 0 asks for every position.
            let value = if keep == s { 0 } else { keep as i64 };
            let value = Tensor::from_array(((), vec![value])).map_err(ort_err)?;
            binding.bind_input(name, &value).map_err(ort_err)?;
        }
        let v = self.config.vocab_size;
        // The device logits view lives until the run is over (declared before its use).
        let mut device_view;
        match device_logits {
            Some(ptr) => {
                let logits_shape = [b as i64, 1, v as i64];
                // SAFETY: the caller of `step_to_device` guarantees `ptr` addresses b * v
                // float32s of device memory on the arena's GPU (which `memory` describes),
                // untouched by anything else until this returns; s == 1 here, so the graph's
                // logits are exactly [b, 1, v].
                device_view = unsafe {
                    runtime::alias_tensor(
                        ptr as *mut std::ffi::c_void,
                        runtime::AliasElement::F32,
                        &logits_shape,
                        &memory,
                    )
                }?;
                binding
                    .bind_output(&self.config.logits_name, &mut device_view)
                    .map_err(ort_err)?;
            }
            None => binding
                .bind_output_to_device(&self.config.logits_name, &MemoryInfo::default())
                .map_err(ort_err)?,
        }

        let run_started = Instant::now();
        let outputs = self.session.run_binding(&binding).map_err(ort_err)?;
        self.last_run_time = run_started.elapsed();
        if device_logits.is_some() {
            return Ok(Vec::new());
        }
        let logits = outputs
            .get(&self.config.logits_name)
            .ok_or_else(|| EngineError::Internal("the graph returned no logits".into()))?;
        let (logits_shape, data) = logits.try_extract_tensor::<f32>().map_err(ort_err)?;
        if logits_shape.len() != 3 || logits_shape[2] as usize != v || data.len() != b * keep * v {
            return Err(EngineError::Internal(format!(
                "logits have shape {logits_shape:?}, expected [{b}, {keep}, {v}]"
            )));
        }
        Ok(match wanted {
            LogitsWanted::All => data.to_vec(),
            LogitsWanted::Last => {
                let mut out = Vec::with_capacity(b * v);
                for (i, r) in rows.iter().enumerate() {
                    // The window holds positions S - keep .. S of each row.
                    let pos = i * keep + r.tokens.len() - 1 - (s - keep);
                    out.extend_from_slice(&data[pos * v..(pos + 1) * v]);
                }
                out
            }
        })
    }
}

/// The element type of the graph input `name` (a KV buffer): float32 or float16.
fn kv_dtype_of(session: &Session, name: &str) -> Result<KvDtype, EngineError> {
    let input = session
        .inputs()
        .iter()
        .find(|i| i.name() == name)
        .ok_or_else(|| {
            EngineError::InvalidConfig(format!("the ONNX graph has no KV input {name}"))
        })?;
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        } => Ok(KvDtype::F32),
        ValueType::Tensor {
            ty: TensorElementType::Float16,
            ..
        } => Ok(KvDtype::F16),
        other => Err(EngineError::InvalidConfig(format!(
            "the graph's KV input {name} is {other:?}; the engine supports float32 and float16 KV"
        ))),
    }
}
