//! Generation of one sequence at a time: prefill the prompt into a slot, then decode token
//! by token until EOS, a stop token or string, or the token limit.
//!
//! This is the batch-1 path `tpo generate` uses; the continuous-batching scheduler drives
//! the same [`Decoder::step`] over many slots at once.

use std::time::{Duration, Instant};

use super::decoder::{Decoder, DecoderOptions, LogitsWanted, RowInput};
use super::kv::KvArena;
use super::sampler::{Sampler, SamplingParams};
use super::EngineError;
use crate::model::{ChatMessage, ChatTemplate, ModelDir, TokenId, Tokenizer};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_new_tokens` or the context length.
    Length,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<TokenId>,
    /// Log-probability of each generated token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl Generation {
    /// Decode throughput: tokens after the first, per second of decode time.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let secs = self.decode_time.as_secs_f64();
        if secs > 0.0 {
            self.tokens.len().saturating_sub(1) as f64 / secs
        } else {
            0.0
        }
    }
}

/// Options for a [`Generator`].
#[derive(Debug, Clone, Copy)]
pub struct GeneratorOptions {
    pub decoder: DecoderOptions,
    /// Tokens per sequence the KV arena holds (prompt + answer).
    pub max_seq_len: usize,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            decoder: DecoderOptions::default(),
            max_seq_len: 2048,
        }
    }
}

/// A policy model ready to answer: decoder, one KV slot, tokenizer and chat template.
pub struct Generator {
    decoder: Decoder,
    arena: KvArena,
    sampler: Sampler,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl Generator {
    pub fn load(model: &ModelDir, options: GeneratorOptions) -> Result<Self, EngineError> {
        let tokenizer = model.tokenizer()?;
        let template = model.chat_template()?;
        let decoder = Decoder::load(model, options.decoder)?;
        let max_len = options.max_seq_len.min(decoder.config().context_length);
        let arena = KvArena::new(decoder.kv_shape(max_len), 1)?;
        Ok(Self {
            decoder,
            arena,
            sampler: Sampler::default(),
            tokenizer,
            template,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a one-turn chat prompt, ending where the assistant answers.
    pub fn chat_prompt(&self, question: &str) -> Result<Vec<TokenId>, EngineError> {
        let text = self.template.render(&[ChatMessage::user(question)], true)?;
        Ok(self.tokenizer.encode(&text)?)
    }

    /// Generates a continuation of `prompt` (token ids) with sample stream `index`.
    pub fn generate(
        &mut self,
        prompt: &[TokenId],
        params: &SamplingParams,
        index: u64,
    ) -> Result<Generation, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let max_len = self.arena.shape().max_len;
        // The prompt plus at least one generated token must fit.
        self.arena.check_len(prompt.len() + 1)?;
        let slot = self
            .arena
            .allocate()
            .ok_or_else(|| EngineError::Internal("no free KV slot".into()))?;
        let o = params.options();
        let mut rng = params.rng(index);
        let eos = self.decoder.config().eos_token_ids.clone();
        let is_stop_token = |t: TokenId| eos.contains(&t) || o.stop_token_ids.contains(&t);

        let started = Instant::now();
        let rows = [RowInput {
            past_len: 0,
            tokens: prompt,
        }];
        let mut logits =
            self.decoder
                .step(&mut self.arena, slot.id(), &rows, LogitsWanted::Last)?;
        let prefill_time = started.elapsed();
        let decode_started = Instant::now();

        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        let mut finish_reason = FinishReason::Length;
        let mut stop_at: Option<usize> = None;
        loop {
            let sampled = self.sampler.sample(&logits, params, rng.next_uniform());
            if is_stop_token(sampled.token) {
                finish_reason = FinishReason::Stop;
                break;
            }
            tokens.push(sampled.token);
            logprobs.push(sampled.logprob);
            if !o.stop.is_empty() {
                let text = self.tokenizer.decode(&tokens)?;
                if let Some(pos) = o.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    stop_at = Some(pos);
                    finish_reason = FinishReason::Stop;
                    break;
                }
            }
            let cached = prompt.len() + tokens.len() - 1;
            if tokens.len() >= params.max_new_tokens() || cached + 1 >= max_len {
                break;
            }
            let last = [sampled.token];
            let rows = [RowInput {
                past_len: cached,
                tokens: &last,
            }];
            logits = self
                .decoder
                .step(&mut self.arena, slot.id(), &rows, LogitsWanted::Last)?;
        }
        let decode_time = decode_started.elapsed();
        let mut text = self.tokenizer.decode(&tokens)?;
        if let Some(pos) = stop_at {
            text.truncate(pos);
        }
        Ok(Generation {
            prompt_tokens: prompt.len(),
            tokens,
            logprobs,
            text,
            finish_reason,
            prefill_time,
            decode_time,
        })
    }
}
