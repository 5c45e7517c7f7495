//! The decode step: one model step over the whole batch (positions `0..B` of the batch
//! plan, slots `0..B` of the arena), retried once, then row by row so a failure is pinned on
//! the rows that fail alone; then every row sampled, on the GPU where the sampling kernel
//! handles it and on the CPU otherwise, and the sequences that ended leave.
//!
//! Not here: what a sampled token does to its sequence (`sample`), admission and prefill.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::decoder::{LogitsWanted, RowInput};
use super::super::device_sampling::SKIPPED_ROW;
use super::super::kv::SlotId;
use super::super::sampler::{LogitsError, Sampled};
use super::super::EngineError;
use super::sequence::Outcome;
use super::Scheduler;
use crate::gpu::RowSampling;
use crate::model::TokenId;

/// Logits of one decode step: the whole batch, or (after a failed batch) each row alone.
enum StepLogits {
    Batch(Vec<f32>),
    Rows(Vec<Result<Vec<f32>, String>>),
}

impl StepLogits {
    /// Whether row `i`'s step succeeded (for device logits, where rows are not on the host).
    fn status(&self, i: usize) -> Result<(), &str> {
        match self {
            StepLogits::Batch(_) => Ok(()),
            StepLogits::Rows(rows) => match rows.get(i) {
                Some(Ok(_)) => Ok(()),
                Some(Err(message)) => Err(message),
                None => Err("the step returned fewer rows than the batch"),
            },
        }
    }

    fn row(&self, i: usize, vocab: usize) -> Result<&[f32], &str> {
        match self {
            StepLogits::Batch(all) => all
                .get(i * vocab..(i + 1) * vocab)
                .ok_or("the step returned fewer rows than the batch"),
            StepLogits::Rows(rows) => match rows.get(i) {
                Some(Ok(row)) => Ok(row),
                Some(Err(message)) => Err(message),
                None => Err("the step returned fewer rows than the batch"),
            },
        }
    }
}

impl Scheduler {
    /// One model step over decoding sequences `range` (contiguous slots), or its error.
    fn model_step(&mut self, range: Range<usize>) -> Result<Vec<f32>, EngineError> {
        let batch = &self.decoding[range.clone()];
        #[cfg(feature = "fault-injection")]
        if let Some(seq) = batch.iter().find(|s| s.fails_steps()) {
            return Err(EngineError::Internal(format!(
                "injected step failure (test hook of sample {})",
                seq.index
            )));
        }
        // The step binds slots `range` as one view: sequence k must hold slot start + k.
        if let Some((k, seq)) = batch
            .iter()
            .enumerate()
            .find(|(k, s)| s.slot.id().0 != range.start + k)
        {
            return Err(EngineError::Internal(format!(
                "decoding sequence {} holds slot {} (the batch must be contiguous)",
                range.start + k,
                seq.slot.id().0
            )));
        }
        let inputs: Vec<[TokenId; 1]> = batch.iter().map(|s| [s.next_input]).collect();
        let rows: Vec<RowInput<'_>> = batch
            .iter()
            .zip(&inputs)
            .map(|(s, t)| RowInput {
                past_len: s.len,
                tokens: t,
            })
            .collect();
        let Some(device) = &self.device else {
            return self.decoder.step(
                &mut self.arena,
                SlotId(range.start),
                &rows,
                LogitsWanted::Last,
            );
        };
        // Row k of the step lands in row range.start + k of the device buffer, which has
        // one row per slot.
        let ptr = device
            .row_ptr(range.start)
            .map_err(|e| EngineError::Internal(format!("device logits: {e}")))?;
        if range.end > self.arena.slots() {
            return Err(EngineError::Internal(format!(
                "decode rows {range:?} exceed the {} slots",
                self.arena.slots()
            )));
        }
        // SAFETY: the buffer has one row of `vocab` float32s per KV slot on the arena's GPU
        // and `range` lies within the slots (checked), so rows range.start.. hold the step's
        // rows; only this thread uses the buffer, and not during the step.
        unsafe {
            self.decoder
                .step_to_device(&mut self.arena, SlotId(range.start), &rows, ptr)
        }?;
        Ok(Vec::new())
    }

    /// Samples on the GPU, in one launch, every row the kernel handles (`Some` at its
    /// index); the other rows (`None`) take the CPU sampler. Empty without device logits.
    fn sample_on_device(
        &self,
        logits: &StepLogits,
        uniforms: &[f32],
    ) -> Vec<Option<Result<Sampled, LogitsError>>> {
        let Some(device) = &self.device else {
            return Vec::new();
        };
        let none = || (0..uniforms.len()).map(|_| None).collect();
        let plan: Vec<Option<RowSampling>> = self
            .decoding
            .iter()
            .zip(uniforms)
            .enumerate()
            .map(|(i, (seq, &u))| {
                let eligible = logits.status(i).is_ok() && !seq.group.cancelled();
                #[cfg(feature = "fault-injection")]
                let eligible = eligible && !seq.poisons_logits();
                eligible
                    .then(|| RowSampling::for_row(&seq.group.params, u, &seq.tokens))
                    .flatten()
            })
            .collect();
        if plan.iter().all(Option::is_none) {
            return none();
        }
        let rows: Vec<RowSampling> = plan.iter().map(|p| p.unwrap_or(SKIPPED_ROW)).collect();
        match device.sample(&rows) {
            Ok(results) => results
                .into_iter()
                .zip(&plan)
                .map(|(r, p)| p.map(|_| r))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the sampling kernel failed; sampling this step on the CPU");
                none()
            }
        }
    }

    /// Takes the kernel's result for decoding sequence `i`.
    fn accept_kernel_result(&mut self, i: usize, result: Result<Sampled, LogitsError>) -> Outcome {
        let seq = &self.decoding[i];
        if seq.group.cancelled() {
            return Outcome::Dropped;
        }
        match result {
            Ok(sampled) => self.accept_sampled(i, sampled),
            Err(e) => {
                seq.group.fail(EngineError::Logits(e));
                Outcome::Dropped
            }
        }
    }

    /// Copies decoding sequence `i`'s device logits to the host and samples them there.
    fn sample_device_row_on_cpu(&mut self, i: usize, u: f32) -> Outcome {
        let mut row = std::mem::take(&mut self.host_row);
        let copied = match &self.device {
            Some(device) => device.row_to_host(i, &mut row).map_err(|e| e.to_string()),
            None => Err("no device logits".to_string()),
        };
        let outcome = match copied {
            Ok(()) => self.sample_row(i, &row, u),
            Err(message) => {
                self.decoding[i].group.fail(EngineError::Internal(format!(
                    "copying a logits row from the GPU: {message}"
                )));
                Outcome::Dropped
            }
        };
        self.host_row = row;
        outcome
    }

    /// Logits of every decoding row: the batch step, retried once; then each row alone, so
    /// a failure is pinned on the rows that fail by themselves (re-running a step rewrites
    /// the same KV positions with the same values, so retries are safe).
    fn decode_logits(&mut self) -> StepLogits {
        let batch = self.plan.decode_batch();
        debug_assert_eq!(batch.end, self.decoding.len());
        let b = batch.end;
        let batch = self
            .model_step(batch.clone())
            .or_else(|_| self.model_step(batch));
        match batch {
            Ok(logits) => StepLogits::Batch(logits),
            Err(e) => {
                tracing::warn!(error = %e, rows = b, "decode step failed twice; running its rows one by one");
                StepLogits::Rows(
                    (0..b)
                        .map(|i| self.model_step(i..i + 1).map_err(|e| e.to_string()))
                        .collect(),
                )
            }
        }
    }

    pub(super) fn decode_step(&mut self) {
        if self.decoding.is_empty() {
            return;
        }
        let started = Instant::now();
        let b = self.decoding.len();
        let logits = self.decode_logits();
        let ort_time = self.decoder.last_run_time();
        let v = self.decoder.config().vocab_size;
        // Sampling on this thread: a parallel split measured no faster on 2 cores, where
        // ONNX Runtime's spinning workers compete for the same cores between runs.
        let sampling_started = Instant::now();
        // Every row draws its uniform, used or not, so its stream never depends on what
        // else happened in the step.
        let uniforms: Vec<f32> = self
            .decoding
            .iter_mut()
            .map(|s| s.rng.next_uniform())
            .collect();
        let on_device = self.device.is_some();
        let mut kernel = self.sample_on_device(&logits, &uniforms);
        let mut ended = Vec::new();
        for (i, &u) in uniforms.iter().enumerate() {
            let row = if on_device {
                logits.status(i).map(|()| &[][..])
            } else {
                logits.row(i, v)
            };
            let outcome = match row {
                Ok(row) => {
                    self.decoding[i].len += 1;
                    match kernel.get_mut(i).and_then(Option::take) {
                        Some(result) => self.accept_kernel_result(i, result),
                        None if on_device => self.sample_device_row_on_cpu(i, u),
                        None => self.sample_row(i, row, u),
                    }
                }
                Err(message) => {
                    self.decoding[i].group.fail(EngineError::Internal(format!(
                        "model step failed: {message}"
                    )));
                    Outcome::Dropped
                }
            };
            if !matches!(outcome, Outcome::Continue) {
                ended.push((i, outcome));
            }
        }
        let sampling_time = sampling_started.elapsed();
        // Highest index first so swap-removal never moves a sequence still to be ended.
        for (i, outcome) in ended.into_iter().rev() {
            self.settle(i, outcome);
        }
        let s = &self.stats;
        s.decode_steps.fetch_add(1, Ordering::Relaxed);
        s.decode_rows.fetch_add(b as u64, Ordering::Relaxed);
        s.decode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        s.decode_ort_nanos
            .fetch_add(ort_time.as_nanos() as u64, Ordering::Relaxed);
        s.decode_sample_nanos
            .fetch_add(sampling_time.as_nanos() as u64, Ordering::Relaxed);
    }
}
