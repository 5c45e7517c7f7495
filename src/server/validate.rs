//! Requests → jobs: every field is range-checked here, against the model and the engine
//! (context length, KV slots), before anything is admitted or a 200 is sent.

use serde_json::Value;

use crate::engine::{Engine, EngineError, SamplingOptions, SamplingParams, MAX_STOP_BYTES};
use crate::model::{ChatMessage, TokenId, Tokenizer};
use crate::search::{
    fit, prompts, DarwinOptions, PeakSetting, SearchOptions, SearchParams, Strategy,
};

use super::error::ApiError;
use super::schema::{
    ChatCompletionRequest, ChatMessageIn, CompletionRequest, ScoreRequest, Stop, TpoOptions,
};

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Most `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most TPO steps (`tpo.depth`) or DARWIN iterations (`tpo.iterations`) one request may
/// ask for: each is a full round of generation and scoring, so an unbounded count would
/// hold the server's permits until the request timeout.
pub const MAX_SEARCH_STEPS: usize = 64;

/// What validation asks of the policy: its context length, its KV slots and its
/// tokenization of prompts. A running [`Engine`] is one; an offline tokenizer and chat
/// template (`server::fuzzing`) is another, so validation runs without a model session.
pub trait Policy {
    /// Sequences the engine decodes at once.
    fn kv_slots(&self) -> usize;
    /// Tokens one sequence may hold, prompt included.
    fn max_seq_len(&self) -> usize;
    /// Token ids of a chat, rendered with the model's template, ending where the
    /// assistant answers.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<TokenId>, EngineError>;
    fn tokenizer(&self) -> &Tokenizer;
}

impl Policy for Engine {
    fn kv_slots(&self) -> usize {
        Engine::kv_slots(self)
    }

    fn max_seq_len(&self) -> usize {
        Engine::max_seq_len(self)
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<TokenId>, EngineError> {
        Ok(self.chat().chat_prompt(messages)?)
    }

    fn tokenizer(&self) -> &Tokenizer {
        Engine::tokenizer(self)
    }
}

/// What validation needs to know about the server.
pub struct Limits<'a> {
    /// The policy (the running engine when serving).
    pub engine: &'a dyn Policy,
    /// The policy's model id (without a strategy suffix).
    pub model_id: &'a str,
    /// Reward models loaded, by name.
    pub reward_models: Vec<String>,
    /// Those of them that score only against a reference answer (similarity, BERTScore).
    pub need_reference: Vec<String>,
    /// Settings of searches selected by a model suffix, and unset `tpo` fields.
    pub search_defaults: &'a SearchOptions,
    /// Reward model of searches that name none.
    pub default_reward_model: &'a str,
    /// `max_tokens` when a request gives none (capped by the context left).
    pub default_max_tokens: usize,
}

/// One generation (plain chat or legacy completion).
#[derive(Debug)]
pub struct Generation {
    pub prompt: Vec<TokenId>,
    pub sampling: SamplingParams,
    pub n: usize,
    /// `Some(k)`: return log-probs, with the `k` most likely alternatives per token.
    pub logprobs: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// One search.
#[derive(Debug)]
pub struct SearchJob {
    pub query: String,
    pub reference: Option<String>,
    pub params: SearchParams,
    pub reward_model: String,
    pub return_trace: bool,
    pub stream: bool,
    pub include_usage: bool,
}

/// What a chat request runs. One per request, moved once: its size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Job {
    Generate(Generation),
    Search(Box<SearchJob>),
}

/// The strategy a model id selects: `None` for the plain model, or the error to return.
pub fn resolve_model(model: &str, limits: &Limits<'_>) -> Result<Option<Strategy>, ApiError> {
    let (base, suffix) = match model.split_once(':') {
        Some((b, s)) => (b, Some(s)),
        None => (model, None),
    };
    if base == limits.model_id {
        match suffix {
            None => return Ok(None),
            Some("tpo") => return Ok(Some(Strategy::Tpo)),
            Some("bon") => return Ok(Some(Strategy::BestOfN)),
            Some("darwin") => return Ok(Some(Strategy::Darwin)),
            Some(_) => {}
        }
    }
    Err(ApiError::model_not_found(
        model,
        &model_ids(limits.model_id),
    ))
}

/// Every model id the server answers to.
pub fn model_ids(model_id: &str) -> Vec<String> {
    let mut ids = vec![model_id.to_string()];
    ids.extend(
        SEARCH_SUFFIXES
            .iter()
            .map(|(s, _)| format!("{model_id}:{s}")),
    );
    ids
}

/// Model-id suffixes and the strategy each selects.
pub const SEARCH_SUFFIXES: &[(&str, Strategy)] = &[
    ("tpo", Strategy::Tpo),
    ("bon", Strategy::BestOfN),
    ("darwin", Strategy::Darwin),
];

/// Sampling fields common to chat and legacy completions.
struct SamplingFields<'a> {
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_tokens_name: &'static str,
    n: Option<u32>,
    seed: Option<i64>,
    stop: Option<&'a Stop>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
}

/// The [`SamplingFields`] of a chat or legacy completion request (distinct wire types whose
/// sampling fields share names and types), with the token limit and the field it came from.
macro_rules! sampling_fields {
    ($req:expr, $max_tokens:expr, $max_tokens_name:expr) => {
        SamplingFields {
            temperature: $req.temperature,
            top_p: $req.top_p,
            max_tokens: $max_tokens,
            max_tokens_name: $max_tokens_name,
            n: $req.n,
            seed: $req.seed,
            stop: $req.stop.as_ref(),
            presence_penalty: $req.presence_penalty,
            frequency_penalty: $req.frequency_penalty,
        }
    };
}

fn check_range(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(ApiError::invalid(
            name,
            format!("{name} must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

fn stop_strings(stop: Option<&Stop>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if list.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                list.len()
            ),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    if let Some(long) = list.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "a stop string may be at most {MAX_STOP_BYTES} bytes, got one of {}",
                long.len()
            ),
        ));
    }
    Ok(list)
}

fn seed_of(seed: Option<i64>) -> Result<Option<u64>, ApiError> {
    match seed {
        None => Ok(None),
        Some(s) if s < 0 => Err(ApiError::invalid(
            "seed",
            format!("seed must be a non-negative integer, got {s}"),
        )),
        Some(s) => Ok(Some(s as u64)),
    }
}

/// The sampler of a plain generation after `prompt_len` tokens of prompt.
fn sampling(
    f: &SamplingFields<'_>,
    prompt_len: usize,
    limits: &Limits<'_>,
) -> Result<(SamplingParams, usize, Vec<String>), ApiError> {
    check_range("temperature", f.temperature, 0.0, 2.0)?;
    check_range("top_p", f.top_p, 0.0, 1.0)?;
    if f.top_p == Some(0.0) {
        return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
    }
    check_range("presence_penalty", f.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", f.frequency_penalty, -2.0, 2.0)?;
    let slots = limits.engine.kv_slots();
    let n = f.n.unwrap_or(1) as usize;
    if n == 0 || n > slots {
        return Err(ApiError::invalid(
            "n",
            format!("n must be between 1 and {slots} (the server's KV slots), got {n}"),
        ));
    }
    let context = limits.engine.max_seq_len();
    if prompt_len >= context {
        return Err(ApiError::invalid(
            "messages",
            format!("the prompt is {prompt_len} tokens; this server's context holds {context}"),
        ));
    }
    let room = context - prompt_len;
    let max_new_tokens = match f.max_tokens {
        Some(0) => {
            return Err(ApiError::invalid(
                f.max_tokens_name,
                format!("{} must be at least 1", f.max_tokens_name),
            ))
        }
        Some(m) if m as usize > room => {
            return Err(ApiError::invalid(
                f.max_tokens_name,
                format!(
                    "{} = {m} does not fit: the prompt is {prompt_len} tokens and the context \
                     holds {context}, so at most {room} can be generated",
                    f.max_tokens_name
                ),
            ))
        }
        Some(m) => m as usize,
        None => limits.default_max_tokens.min(room),
    };
    let stop = stop_strings(f.stop)?;
    let mut options = SamplingOptions {
        temperature: f.temperature.unwrap_or(1.0),
        top_p: f.top_p.unwrap_or(1.0),
        max_new_tokens,
        stop: stop.clone(),
        seed: seed_of(f.seed)?,
        ..SamplingOptions::default()
    };
    set_penalties(&mut options, f.presence_penalty, f.frequency_penalty)?;
    let params = SamplingParams::new(options).map_err(|e| ApiError::bad_body(e.to_string()))?;
    Ok((params, n, stop))
}

/// Presence and frequency penalties (0 = off).
fn set_penalties(
    options: &mut SamplingOptions,
    presence: Option<f32>,
    frequency: Option<f32>,
) -> Result<(), ApiError> {
    options.presence_penalty = presence.unwrap_or(0.0);
    options.frequency_penalty = frequency.unwrap_or(0.0);
    Ok(())
}

/// The text of one message's `content`: a string or text parts.
fn content_text(i: usize, message: &ChatMessageIn) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match &message.content {
        None | Some(Value::Null) => Err(ApiError::invalid(
            param,
            format!("messages[{i}] has no content"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let part_param = format!("{param}[{j}]");
                let Value::Object(map) = part else {
                    return Err(ApiError::invalid(
                        part_param,
                        "a content part must be an object",
                    ));
                };
                match map.get("type") {
                    Some(Value::String(t)) if t == "text" => {}
                    Some(Value::String(t)) => {
                        return Err(ApiError::invalid(
                            format!("{part_param}.type"),
                            format!(
                                "content part type {t:?} is not supported (only \"text\"; this \
                                 model reads text only)"
                            ),
                        ))
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{part_param}.type"),
                            "a content part needs \"type\": \"text\"",
                        ))
                    }
                }
                if let Some(extra) = map.keys().find(|k| *k != "type" && *k != "text") {
                    return Err(ApiError::invalid(
                        format!("{part_param}.{extra}"),
                        format!("unknown field {extra:?} in a text content part"),
                    ));
                }
                match map.get("text") {
                    Some(Value::String(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{part_param}.text"),
                            "a text content part needs a string \"text\"",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid(
            param,
            "content must be a string or an array of text parts",
        )),
    }
}

fn messages(list: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "role {other:?} is not supported (system, developer, user or \
                             assistant)"
                        ),
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content: content_text(i, m)?,
            })
        })
        .collect()
}

fn stream_flags(
    stream: Option<bool>,
    options: Option<&super::schema::StreamOptions>,
) -> Result<(bool, bool), ApiError> {
    let stream = stream.unwrap_or(false);
    if options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed with stream: true",
        ));
    }
    Ok((
        stream,
        options.and_then(|o| o.include_usage).unwrap_or(false),
    ))
}

/// Validates a chat request into a job.
pub fn chat_job(req: &ChatCompletionRequest, limits: &Limits<'_>) -> Result<Job, ApiError> {
    let suffix_strategy = resolve_model(&req.model, limits)?;
    let chat = messages(&req.messages)?;
    let (stream, include_usage) = stream_flags(req.stream, req.stream_options.as_ref())?;
    if req.max_tokens.is_some() && req.max_completion_tokens.is_some() {
        return Err(ApiError::invalid(
            "max_completion_tokens",
            "give max_tokens or max_completion_tokens, not both",
        ));
    }
    let (max_tokens, max_tokens_name) = match req.max_completion_tokens {
        Some(m) => (Some(m), "max_completion_tokens"),
        None => (req.max_tokens, "max_tokens"),
    };
    let tpo = req.tpo.as_ref();
    let strategy = match tpo.and_then(|t| t.strategy.as_deref()) {
        Some("none") => None,
        Some(name) => Some(name.parse::<Strategy>().map_err(|_| {
            ApiError::invalid(
                "tpo.strategy",
                format!("unknown strategy {name:?} (none, tpo, bon, darwin or greedy)"),
            )
        })?),
        None => suffix_strategy,
    };
    let Some(strategy) = strategy else {
        if tpo.is_some_and(has_search_settings) {
            return Err(ApiError::invalid(
                "tpo",
                "search settings were given but no search strategy (set tpo.strategy or use \
                 a :tpo, :bon or :darwin model id)",
            ));
        }
        let logprobs = match (req.logprobs, req.top_logprobs) {
            (Some(true), Some(k)) if k > MAX_TOP_LOGPROBS => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
                ))
            }
            (Some(true), k) => Some(k.unwrap_or(0) as usize),
            (_, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ))
            }
            _ => None,
        };
        let prompt = limits.engine.chat_prompt(&chat)?;
        let (mut sampling, n, stop) = sampling(
            &sampling_fields!(req, max_tokens, max_tokens_name),
            prompt.len(),
            limits,
        )?;
        if let Some(k) = logprobs {
            sampling = with_top_logprobs(sampling, k)?;
        }
        return Ok(Job::Generate(Generation {
            prompt,
            sampling,
            n,
            logprobs,
            stop,
            stream,
            include_usage,
        }));
    };
    // A search: one user question in, one answer out.
    for (field, given) in [
        ("n", req.n.is_some_and(|n| n != 1)),
        ("logprobs", req.logprobs == Some(true)),
        ("top_logprobs", req.top_logprobs.is_some()),
        ("stop", req.stop.is_some()),
        (
            "presence_penalty",
            req.presence_penalty.is_some_and(|p| p != 0.0),
        ),
        (
            "frequency_penalty",
            req.frequency_penalty.is_some_and(|p| p != 0.0),
        ),
    ] {
        if given {
            return Err(ApiError::invalid(
                field,
                format!("{field} is not available for searches (a search returns one answer)"),
            ));
        }
    }
    let query = match chat.as_slice() {
        [only] if only.role == "user" => only.content.clone(),
        _ => {
            return Err(ApiError::invalid(
                "messages",
                "a search answers one question: send exactly one user message",
            ))
        }
    };
    // The search's first prompt is the query; one the context cannot hold would fail only
    // once the search runs (after a 200, when streamed).
    let prompt_len = limits.engine.chat_prompt(&chat)?.len();
    let context = limits.engine.max_seq_len();
    if prompt_len >= context {
        return Err(ApiError::invalid(
            "messages",
            format!("the prompt is {prompt_len} tokens; this server's context holds {context}"),
        ));
    }
    check_range("temperature", req.temperature, 0.0, 2.0)?;
    check_range("top_p", req.top_p, 0.0, 1.0)?;
    let t = tpo.map(|t| t as &TpoOptions);
    let d = limits.search_defaults;
    let get = |v: Option<u32>, default: usize| v.map(|x| x as usize).unwrap_or(default);
    let options = SearchOptions {
        strategy,
        width: get(t.and_then(|t| t.width), d.width),
        depth: get(t.and_then(|t| t.depth), d.depth),
        temperature: req.temperature.unwrap_or(d.temperature),
        top_p: req.top_p.unwrap_or(d.top_p),
        max_new_tokens: get(max_tokens, d.max_new_tokens),
        seed: seed_of(req.seed)?.unwrap_or(d.seed),
        darwin: DarwinOptions {
            mutations: get(t.and_then(|t| t.mutations), d.darwin.mutations),
            replace_every: get(t.and_then(|t| t.replace_every), d.darwin.replace_every),
            keep: get(t.and_then(|t| t.keep), d.darwin.keep),
            iterations: get(t.and_then(|t| t.iterations), d.darwin.iterations),
        },
    };
    if options.max_new_tokens == 0 || options.max_new_tokens >= limits.engine.max_seq_len() {
        return Err(ApiError::invalid(
            max_tokens_name,
            format!(
                "{max_tokens_name} must be between 1 and {} for a search",
                limits.engine.max_seq_len() - 1
            ),
        ));
    }
    check_search_fits(
        limits.engine,
        strategy,
        prompt_len,
        options.max_new_tokens,
        max_tokens_name,
    )?;
    let reference = t.and_then(|t| t.reference.clone());
    if let Some(text) = &reference {
        let tokens = limits.engine.tokenizer().encode(text).map_err(|e| {
            ApiError::invalid(
                "tpo.reference",
                format!("the reference cannot be tokenized: {e}"),
            )
        })?;
        if tokens.len() > context {
            return Err(ApiError::invalid(
                "tpo.reference",
                format!(
                    "the reference is {} tokens; this server's context holds {context}",
                    tokens.len()
                ),
            ));
        }
    }
    let steps = match strategy {
        Strategy::Tpo => Some(("tpo.depth", options.depth)),
        Strategy::Darwin => Some(("tpo.iterations", options.darwin.iterations)),
        Strategy::BestOfN | Strategy::Greedy => None,
    };
    if let Some((field, steps)) = steps {
        if steps > MAX_SEARCH_STEPS {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be at most {MAX_SEARCH_STEPS}, got {steps}"),
            ));
        }
    }
    let slots = limits.engine.kv_slots();
    let field = match options.peak_setting() {
        PeakSetting::Width => "tpo.width",
        PeakSetting::Mutations => "tpo.mutations",
    };
    let fan_out = options.peak_sequences();
    if fan_out == 0 || fan_out > slots {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be between 1 and {slots} (the server's KV slots), got {fan_out}"),
        ));
    }
    let params = SearchParams::new(options).map_err(|e| ApiError::invalid("tpo", e.to_string()))?;
    let reward_model = t
        .and_then(|t| t.reward_model.clone())
        .unwrap_or_else(|| limits.default_reward_model.to_string());
    if !limits.reward_models.contains(&reward_model) {
        return Err(ApiError::invalid(
            "tpo.reward_model",
            format!(
                "reward model {reward_model:?} is not loaded; this server has: {}",
                limits.reward_models.join(", ")
            ),
        ));
    }
    if reference.is_none() && limits.need_reference.contains(&reward_model) {
        return Err(ApiError::invalid(
            "tpo.reference",
            format!(
                "the reward model {reward_model:?} scores answers by their similarity to a \
                 reference answer: give one in tpo.reference, or pick another reward model"
            ),
        ));
    }
    Ok(Job::Search(Box::new(SearchJob {
        query,
        reference,
        params,
        reward_model,
        return_trace: t.and_then(|t| t.return_trace).unwrap_or(false),
        stream,
        include_usage,
    })))
}

/// Refuses, before any work, a search one of whose policy calls could not fit the context
/// (the rule of [`fit`]: each call's prompt plus `max_tokens` must fit).
fn check_search_fits(
    engine: &dyn Policy,
    strategy: Strategy,
    question_prompt: usize,
    max_new_tokens: usize,
    field: &str,
) -> Result<(), ApiError> {
    let render = |text: &str| {
        engine
            .chat_prompt(&[ChatMessage::user(text)])
            .map(|t| t.len())
    };
    let prefix = engine
        .tokenizer()
        .encode(prompts::UPDATE_RESPONSE_PREFIX)
        .map(|t| t.len())
        .map_err(|e| ApiError::internal(format!("tokenizing the TPO prompts: {e}")))?;
    let checked = fit::check(
        strategy,
        render,
        prefix,
        question_prompt,
        max_new_tokens,
        engine.max_seq_len(),
    )?;
    checked.map_err(|e| super::error::does_not_fit(field, &e))
}

fn has_search_settings(t: &TpoOptions) -> bool {
    t.width.is_some()
        || t.depth.is_some()
        || t.mutations.is_some()
        || t.replace_every.is_some()
        || t.keep.is_some()
        || t.iterations.is_some()
        || t.reward_model.is_some()
        || t.reference.is_some()
        || t.return_trace == Some(true)
}

/// The sampler asking the engine for the `k` most likely alternatives per token.
fn with_top_logprobs(sampling: SamplingParams, k: usize) -> Result<SamplingParams, ApiError> {
    let mut options = sampling.options().clone();
    options.top_logprobs = k;
    options.seed = Some(sampling.sample_seed(0));
    SamplingParams::new(options).map_err(|e| ApiError::invalid("top_logprobs", e.to_string()))
}

/// Validates a legacy completion request into a generation.
pub fn completion_job(
    req: &CompletionRequest,
    limits: &Limits<'_>,
) -> Result<Generation, ApiError> {
    if resolve_model(&req.model, limits)?.is_some() {
        return Err(ApiError::invalid(
            "model",
            "searches run through /v1/chat/completions; /v1/completions takes the plain model",
        ));
    }
    let Value::String(prompt_text) = &req.prompt else {
        return Err(ApiError::invalid(
            "prompt",
            "prompt must be one string (token-id and batched prompts are not supported)",
        ));
    };
    if prompt_text.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt must not be empty"));
    }
    let (stream, include_usage) = stream_flags(req.stream, req.stream_options.as_ref())?;
    let prompt =
        limits.engine.tokenizer().encode(prompt_text).map_err(|e| {
            ApiError::invalid("prompt", format!("the prompt cannot be tokenized: {e}"))
        })?;
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt has no tokens"));
    }
    let (sampling, n, stop) = sampling(
        &sampling_fields!(req, req.max_tokens, "max_tokens"),
        prompt.len(),
        limits,
    )?;
    Ok(Generation {
        prompt,
        sampling,
        n,
        logprobs: None,
        stop,
        stream,
        include_usage,
    })
}

/// The reward model a score request runs on (the one it names, else the first loaded),
/// once its item count is checked.
pub fn score_reward_model(req: &ScoreRequest, limits: &Limits<'_>) -> Result<String, ApiError> {
    let max = super::MAX_SCORE_ITEMS;
    if req.items.is_empty() || req.items.len() > max {
        return Err(ApiError::invalid(
            "items",
            format!(
                "items must hold 1 to {max} entries, got {}",
                req.items.len()
            ),
        ));
    }
    let name = match &req.reward_model {
        Some(n) => n.clone(),
        None => limits
            .reward_models
            .first()
            .cloned()
            .ok_or_else(|| ApiError::invalid("reward_model", "no reward model is loaded"))?,
    };
    if !limits.reward_models.contains(&name) {
        return Err(ApiError::invalid(
            "reward_model",
            format!(
                "reward model {name:?} is not loaded; this server has: {}",
                limits.reward_models.join(", ")
            ),
        ));
    }
    Ok(name)
}
