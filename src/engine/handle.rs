//! `Engine`: the cheap, cloneable handle callers hold. It validates requests, sends them to
//! the scheduler thread over a crossbeam channel, and hands back streams and futures.
//! Many callers, one owner: the session and the KV arena live only on the scheduler thread.
//! Requests and results are token ids; the handle carries the policy's text side
//! ([`ChatFormat`], in `model`) for callers that render chats or decode answers, and does
//! neither itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use super::decoder::{Decoder, DecoderOptions};
use super::device_sampling::DeviceSampling;
use super::kv::{KvArena, KvPlacement};
use super::request::{
    fail_orphans, stopped, Command, ContinuationLogprobs, GenerateRequest, GenerationStream,
    PendingGuard, SampleOutput,
};
use super::scheduler::{EngineStats, Scheduler, SchedulerLimits};
use super::self_check::{self, PolicyCheck};
use super::EngineError;
use crate::liveness::Liveness;
use crate::model::{ChatFormat, ModelDir, TokenId, Tokenizer};

/// How an engine is built.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub decoder: DecoderOptions,
    /// Sequences that can decode at once (KV slots); ignored when `kv_memory` is set.
    pub kv_slots: usize,
    /// Size the arena by memory instead: as many slots of `max_seq_len` tokens as fit in
    /// this many bytes (keys and values, every layer), so shorter slots give more of them.
    pub kv_memory: Option<usize>,
    /// Tokens per sequence a slot holds (prompt + answer).
    pub max_seq_len: usize,
    /// Prompt tokens prefilled per scheduler iteration before each decode step.
    pub prefill_budget: usize,
    /// Requests in flight (queued, prefilling or decoding) before `submit` answers
    /// [`EngineError::Overloaded`]; bounds the command channel and the waiting queue.
    pub max_pending: usize,
    /// Keep finished sequences' KV rows in free slots so later prompts that start with the
    /// same tokens prefill only the rest (outputs are unchanged; see `prefix_cache`).
    pub prefix_cache: bool,
    /// With the KV arena on a GPU, keep decode logits there and sample them with the top-p
    /// kernel (false: logits come to the host for the CPU sampler, e.g. to compare the two).
    pub sample_on_device: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            decoder: DecoderOptions::default(),
            kv_slots: 64,
            kv_memory: None,
            max_seq_len: 2048,
            prefill_budget: 512,
            max_pending: 4096,
            prefix_cache: true,
            sample_on_device: true,
        }
    }
}

/// A handle to a running policy engine.
#[derive(Clone)]
pub struct Engine {
    commands: Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The policy's text side (tokenizer, chat template), for callers that work in text.
    chat: Arc<ChatFormat>,
    stats: Arc<EngineStats>,
    max_seq_len: usize,
    kv_slots: usize,
    vocab_size: usize,
    /// Requests in flight now, and the limit.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// Decode logits stay on the GPU and the top-p kernel samples them.
    logits_on_device: bool,
    /// Whether the scheduler thread is alive (it records why it died).
    liveness: Liveness,
    self_check: PolicyCheck,
    /// A second receiver of the command channel, used only once the scheduler is dead, to
    /// fail commands that missed its final drain (`request::fail_orphans`).
    orphans: crossbeam_channel::Receiver<Command>,
}

/// Tokens per slot of the self-check's arena (its prompts are shorter; a sliding-window
/// graph gets its whole window).
const SELF_CHECK_LEN: usize = 32;

impl Engine {
    /// Loads the model and starts its scheduler thread.
    pub fn start(model: &ModelDir, options: EngineOptions) -> Result<Self, EngineError> {
        let slots_given = options.kv_memory.is_some() || options.kv_slots > 0;
        if !slots_given || options.prefill_budget == 0 || options.max_pending == 0 {
            return Err(EngineError::InvalidConfig(
                "kv_slots, prefill_budget and max_pending must be at least 1".into(),
            ));
        }
        let chat = Arc::new(ChatFormat::load(model)?);
        let decoder = Decoder::load(model, options.decoder)?;
        let max_seq_len = options.max_seq_len.min(decoder.config().context_length);
        // A windowed graph's attention kernel needs the whole window in its KV buffer.
        let window = decoder.config().sliding_window.map(|w| w.window_size);
        if let Some(window) = window.filter(|&w| max_seq_len < w) {
            return Err(EngineError::BelowSlidingWindow {
                max_seq_len,
                window,
            });
        }
        let check_len = max_seq_len.min(SELF_CHECK_LEN.max(window.unwrap_or(0)));
        let vocab_size = decoder.config().vocab_size;
        let shape = decoder.kv_shape(max_seq_len);
        let kv_slots = match options.kv_memory {
            Some(bytes) => super::kv::slots_in_budget(shape, bytes)?,
            None => options.kv_slots,
        };
        // A CUDA / TensorRT session gets its KV arena in the same GPU's memory, bound in place.
        let placement = match options.decoder.device.gpu_ordinal() {
            Some(ordinal) => KvPlacement::Cuda(ordinal),
            None => {
                super::kv::check_arena_fits(shape, kv_slots)?;
                KvPlacement::Host
            }
        };
        // Never more commands than requests in flight (checked before each send).
        let (tx, rx) = crossbeam_channel::bounded(options.max_pending);
        let orphans = rx.clone();
        let stats = Arc::new(EngineStats::default());
        let limits = SchedulerLimits {
            prefill_budget: options.prefill_budget,
            prefix_cache: options.prefix_cache,
            multi_token_rows_only: false,
        };
        let logits_f32 = decoder.logits_are_f32();
        let sample_on_device = options.sample_on_device;
        let thread_tokenizer = chat.shared_tokenizer();
        let thread_stats = Arc::clone(&stats);
        let liveness = Liveness::new();
        let thread_liveness = liveness.clone();
        // The arena is created on the scheduler thread (it is not `Send`: slots hand back
        // through an `Rc`); creation errors come back through this channel.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("tpo-scheduler".into())
            .spawn(move || {
                let mut decoder = decoder;
                let check =
                    match self_check::run(&mut decoder, &thread_tokenizer, placement, check_len) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                let limits = SchedulerLimits {
                    multi_token_rows_only: limits.prefix_cache && check.one_token_steps_differ(),
                    ..limits
                };
                let arena = match KvArena::on(placement, shape, kv_slots) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let device = if sample_on_device {
                    device_sampling(placement, logits_f32, kv_slots, vocab_size)
                } else {
                    None
                };
                let _ = ready_tx.send(Ok((device.is_some(), check)));
                Scheduler::new(
                    decoder,
                    arena,
                    thread_tokenizer,
                    rx,
                    thread_stats,
                    limits,
                    device,
                )
                .run(&thread_liveness);
            })
            .map_err(|e| EngineError::Internal(format!("spawning the scheduler thread: {e}")))?;
        let (logits_on_device, self_check) = ready_rx.recv().map_err(|_| {
            EngineError::Internal("the scheduler thread exited during start".into())
        })??;
        Ok(Self {
            commands: tx,
            shared: Arc::new(Shared {
                chat,
                stats,
                max_seq_len,
                kv_slots,
                vocab_size,
                pending: Arc::new(AtomicUsize::new(0)),
                max_pending: options.max_pending,
                logits_on_device,
                liveness,
                self_check,
                orphans,
            }),
        })
    }

    /// What the load-time self-check ran and found (see `engine::self_check`).
    pub fn self_check(&self) -> &PolicyCheck {
        &self.shared.self_check
    }

    /// Whether decode steps keep their logits on the GPU and sample them with the top-p
    /// kernel (a CUDA / TensorRT engine whose kernels loaded); otherwise logits come to the
    /// host and the CPU sampler takes them.
    pub fn logits_on_device(&self) -> bool {
        self.shared.logits_on_device
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.shared.chat.tokenizer()
    }

    /// Why the scheduler thread died, or `None` while it runs.
    pub fn dead_reason(&self) -> Option<String> {
        self.shared.liveness.dead_reason()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    pub fn max_seq_len(&self) -> usize {
        self.shared.max_seq_len
    }

    pub fn kv_slots(&self) -> usize {
        self.shared.kv_slots
    }

    /// The policy's text side: its chat template and tokenizer (conversations into prompt
    /// tokens, generated tokens into text). The engine itself takes and returns tokens.
    pub fn chat(&self) -> &ChatFormat {
        &self.shared.chat
    }

    /// Counts one more request in flight, or refuses it when the limit is reached.
    fn admit(&self) -> Result<PendingGuard, EngineError> {
        let limit = self.shared.max_pending;
        self.shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|pending| EngineError::Overloaded { pending, limit })?;
        Ok(PendingGuard(Arc::clone(&self.shared.pending)))
    }

    /// Empties the prefix cache: requests submitted after this call find no cached rows
    /// (benchmarks use it so one phase does not reuse another's work).
    pub fn clear_prefix_cache(&self) -> Result<(), EngineError> {
        self.commands
            .send(Command::ClearPrefixCache)
            .map_err(|_| stopped(&self.shared.liveness))?;
        fail_orphans(&self.shared.orphans, &self.shared.liveness);
        Ok(())
    }

    /// Requests in flight now (queued, prefilling or decoding).
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Overloaded {
                pending: self.pending(),
                limit: self.shared.max_pending,
            },
            TrySendError::Disconnected(_) => stopped(&self.shared.liveness),
        })?;
        // A scheduler that died meanwhile may have drained the queue already.
        fail_orphans(&self.shared.orphans, &self.shared.liveness);
        Ok(())
    }

    fn check_tokens(&self, tokens: &[TokenId], total_len: usize) -> Result<(), EngineError> {
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.shared.vocab_size)
        {
            return Err(EngineError::InvalidToken {
                token: bad,
                vocab: self.shared.vocab_size,
            });
        }
        if total_len > self.shared.max_seq_len {
            return Err(EngineError::SequenceTooLong {
                tokens: total_len,
                limit: self.shared.max_seq_len,
            });
        }
        Ok(())
    }

    /// Submits a generation; events stream back as the scheduler produces them.
    /// Invalid requests fail here, before reaching the scheduler.
    pub fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        if request.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if request.n == 0 || request.n > self.shared.kv_slots {
            return Err(EngineError::InvalidSampleCount {
                n: request.n,
                slots: self.shared.kv_slots,
            });
        }
        // The prompt and at least one generated token must fit a slot.
        self.check_tokens(&request.prompt, request.prompt.len() + 1)?;
        let n = request.n;
        let pending = self.admit()?;
        // Room for every event the request can produce (each sample's tokens, bounded by
        // its slot, and its result, plus one failure), so the scheduler never blocks.
        let per_sample = request.params.max_new_tokens().min(self.shared.max_seq_len) + 1;
        let (tx, rx) = tokio::sync::mpsc::channel(n * per_sample + 1);
        self.send(Command::Generate {
            request,
            events: tx,
        })?;
        Ok(GenerationStream {
            rx,
            n,
            finished: 0,
            over: false,
            _pending: pending,
            liveness: self.shared.liveness.clone(),
        })
    }

    /// Generates and waits for every sample.
    pub async fn generate(
        &self,
        request: GenerateRequest,
    ) -> Result<Vec<SampleOutput>, EngineError> {
        self.submit(request)?.collect().await
    }

    /// [`Engine::generate`] for synchronous callers (not from inside an async runtime).
    pub fn generate_blocking(
        &self,
        request: GenerateRequest,
    ) -> Result<Vec<SampleOutput>, EngineError> {
        futures::executor::block_on(self.generate(request))
    }

    /// Teacher-forced log-probs of `continuation` after `prompt` (one prefill, batched with
    /// everything else the scheduler runs).
    pub async fn logprobs(
        &self,
        prompt: Vec<TokenId>,
        continuation: Vec<TokenId>,
    ) -> Result<ContinuationLogprobs, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if continuation.is_empty() {
            return Err(EngineError::EmptyContinuation);
        }
        let mut all = prompt.clone();
        all.extend_from_slice(&continuation);
        self.check_tokens(&all, all.len())?;
        let _pending = self.admit()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Logprobs {
            prompt,
            continuation,
            reply,
        })?;
        rx.await.map_err(|_| stopped(&self.shared.liveness))?
    }

    /// [`Engine::logprobs`] for synchronous callers.
    pub fn logprobs_blocking(
        &self,
        prompt: Vec<TokenId>,
        continuation: Vec<TokenId>,
    ) -> Result<ContinuationLogprobs, EngineError> {
        futures::executor::block_on(self.logprobs(prompt, continuation))
    }
}

/// Decode logits on the GPU for a device arena with float32 logits, when the sampling kernel
/// loads there; otherwise `None` (host logits, CPU sampling), with the reason logged once.
fn device_sampling(
    placement: KvPlacement,
    logits_f32: bool,
    slots: usize,
    vocab: usize,
) -> Option<DeviceSampling> {
    let KvPlacement::Cuda(ordinal) = placement else {
        return None;
    };
    if !logits_f32 {
        tracing::warn!("the graph's logits are not float32; decode logits come to the host");
        return None;
    }
    match DeviceSampling::open(ordinal, slots, vocab) {
        Ok(device) => Some(device),
        Err(e) => {
            tracing::warn!(error = %e, "the sampling kernel is unavailable; decode logits come to the host and the CPU samples them");
            None
        }
    }
}
