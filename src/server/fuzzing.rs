//! Request parsing and validation without a running engine, for the `cargo fuzz` target
//! (`fuzz/`) and the stable replay of its corpus: a request body's bytes go through
//! exactly what a handler runs before admission ([`body::parse`] into the wire type, then
//! [`validate`]), against the model folder's real tokenizer and chat template.
//!
//! Not a stable API: hidden from the docs, public only so the fuzz crate can reach it.
//!
//! [`request`] also checks what validation promises: an accepted job fits the context and
//! the KV slots (the engine would refuse it after a 200 otherwise), and a refusal is a 4xx
//! naming its problem. A broken promise panics, which is what the fuzzer reports.

use std::path::Path;

use crate::engine::EngineError;
use crate::model::{ChatMessage, ChatTemplate, DecoderConfig, ModelError, TokenId, Tokenizer};
use crate::search::{SearchOptions, Strategy};

use super::body;
use super::error::ApiError;
use super::schema::{
    ChatCompletionRequest, CompletionRequest, ScoreRequest, CHAT_FIELDS, COMPLETION_FIELDS,
    SCORE_FIELDS,
};
use super::validate::{self, Generation, Job, Limits, Policy, SearchJob};

/// KV slots of the fuzzed server: few, so `n` and search widths reach the limit.
pub const KV_SLOTS: usize = 8;
/// Context of the fuzzed server (or the model's, if shorter): short, so that prompts of
/// a few kilobytes reach it.
pub const MAX_SEQ_LEN: usize = 512;

/// A policy's tokenizer and chat template, with the server settings validation reads
/// (`tpo serve`'s defaults, except [`KV_SLOTS`] and [`MAX_SEQ_LEN`]).
pub struct Context {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    kv_slots: usize,
    max_seq_len: usize,
    model_id: String,
    reward_models: Vec<String>,
    search_defaults: SearchOptions,
    default_max_tokens: usize,
}

impl Context {
    /// Loads the tokenizer, chat template and config of the model folder `dir` (no ONNX
    /// session); the model id is the folder's name, as `tpo serve` names it.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let config = DecoderConfig::load(dir)?;
        let model_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "policy".into());
        Ok(Self {
            tokenizer: Tokenizer::load(dir)?,
            template: ChatTemplate::load(dir)?,
            kv_slots: KV_SLOTS,
            max_seq_len: MAX_SEQ_LEN.min(config.context_length),
            model_id,
            reward_models: vec!["judge".into(), "similarity".into()],
            search_defaults: SearchOptions::default(),
            default_max_tokens: 512,
        })
    }

    fn limits(&self) -> Limits<'_> {
        Limits {
            engine: self,
            model_id: &self.model_id,
            reward_models: self.reward_models.clone(),
            need_reference: vec!["similarity".into()],
            search_defaults: &self.search_defaults,
            default_reward_model: &self.reward_models[0],
            default_max_tokens: self.default_max_tokens,
        }
    }
}

impl Policy for Context {
    fn kv_slots(&self) -> usize {
        self.kv_slots
    }

    fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// As [`crate::engine::Engine::chat_prompt`] renders and tokenizes.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<TokenId>, EngineError> {
        let text = self.template.render(messages, true)?;
        Ok(self.tokenizer.encode(&text)?)
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// `POST /v1/chat/completions` up to admission.
pub fn chat(bytes: &[u8], ctx: &Context) -> Result<(), ApiError> {
    let req: ChatCompletionRequest = body::parse(bytes, &CHAT_FIELDS)?;
    match validate::chat_job(&req, &ctx.limits())? {
        Job::Generate(g) => check_generation(&g, ctx),
        Job::Search(s) => check_search(&s, ctx),
    }
    Ok(())
}

/// `POST /v1/completions` up to admission.
pub fn completion(bytes: &[u8], ctx: &Context) -> Result<(), ApiError> {
    let req: CompletionRequest = body::parse(bytes, &COMPLETION_FIELDS)?;
    let g = validate::completion_job(&req, &ctx.limits())?;
    check_generation(&g, ctx);
    Ok(())
}

/// `POST /v1/score` up to admission.
pub fn score(bytes: &[u8], ctx: &Context) -> Result<(), ApiError> {
    let req: ScoreRequest = body::parse(bytes, &SCORE_FIELDS)?;
    let name = validate::score_reward_model(&req, &ctx.limits())?;
    assert!(ctx.reward_models.contains(&name), "scored with {name:?}");
    Ok(())
}

/// One body through all three endpoints.
///
/// # Panics
///
/// When validation breaks a promise: an accepted job the engine would refuse, or a
/// refusal that is not a 4xx with a message.
pub fn request(bytes: &[u8], ctx: &Context) {
    for (endpoint, result) in [
        ("chat", chat(bytes, ctx)),
        ("completions", completion(bytes, ctx)),
        ("score", score(bytes, ctx)),
    ] {
        if let Err(e) = result {
            assert!(
                e.status.is_client_error() && !e.message.is_empty(),
                "{endpoint}: refused with {e:?}"
            );
        }
    }
}

/// What the engine's `submit` checks, and the request limits.
fn check_generation(g: &Generation, ctx: &Context) {
    let prompt = g.prompt.len();
    let new = g.sampling.max_new_tokens();
    assert!(prompt > 0, "accepted an empty prompt");
    assert!(
        prompt + new <= ctx.max_seq_len,
        "accepted {prompt} prompt + {new} new tokens; the context holds {}",
        ctx.max_seq_len
    );
    assert!((1..=ctx.kv_slots).contains(&g.n), "accepted n = {}", g.n);
    let vocab = ctx.tokenizer.vocab_size();
    assert!(
        g.prompt.iter().all(|&t| (t as usize) < vocab),
        "a prompt token is outside the vocabulary ({vocab})"
    );
    assert!(g.stop.len() <= validate::MAX_STOP_STRINGS);
    assert!(g
        .logprobs
        .is_none_or(|k| k <= validate::MAX_TOP_LOGPROBS as usize));
}

/// A search's fan-out fits the slots, and its first prompt (the query) fits the context.
fn check_search(s: &SearchJob, ctx: &Context) {
    let p = &s.params;
    let fan_out = match p.strategy() {
        Strategy::Greedy => 1,
        Strategy::Darwin => p.darwin().mutations,
        Strategy::BestOfN | Strategy::Tpo => p.width(),
    };
    assert!(
        (1..=ctx.kv_slots).contains(&fan_out),
        "accepted a fan-out of {fan_out}"
    );
    assert!(p.max_new_tokens() >= 1 && p.max_new_tokens() < ctx.max_seq_len);
    assert!(ctx.reward_models.contains(&s.reward_model));
    // The engine takes a prompt when it and one new token fit.
    match ctx.chat_prompt(&[ChatMessage::user(s.query.as_str())]) {
        Ok(prompt) => assert!(
            prompt.len() < ctx.max_seq_len,
            "accepted a search whose query is {} tokens; the context holds {}",
            prompt.len(),
            ctx.max_seq_len
        ),
        Err(e) => panic!("accepted a search whose query cannot be tokenized: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        match Context::open(&crate::paths::default_policy_dir()) {
            Ok(c) => c,
            Err(e) => panic!("the policy's tokenizer is needed (run `make setup`): {e}"),
        }
    }

    /// Every fuzz seed and every input the fuzzer ever crashed on (`fuzz/corpus/request`,
    /// `fuzz/regressions`), replayed through [`request`].
    #[test]
    fn fuzz_corpus_replays_without_panic() {
        let ctx = context();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for dir in ["corpus/request", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths.iter().filter(|p| p.is_file()) {
                let bytes = match std::fs::read(path) {
                    Ok(b) => b,
                    Err(e) => panic!("reading {}: {e}", path.display()),
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    request(&bytes, &ctx)
                }));
                assert!(outcome.is_ok(), "{} panicked", path.display());
                replayed += 1;
            }
        }
        assert!(replayed >= 10, "only {replayed} fuzz inputs under {root:?}");
    }

    /// Fuzz finding (`fuzz/regressions/search-query-over-context.json`): a search whose
    /// query the context cannot hold was accepted, and failed only once running (after a
    /// 200, when streamed).
    #[test]
    fn refuses_a_search_whose_query_overflows_the_context() {
        let ctx = context();
        let body = serde_json::json!({
            "model": format!("{}:tpo", ctx.model_id),
            "messages": [{"role": "user", "content": "word ".repeat(MAX_SEQ_LEN)}],
            "stream": true,
        });
        let e = chat(body.to_string().as_bytes(), &ctx).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("messages"), "{e:?}");
        // A query that fits is still a search.
        let body = serde_json::json!({
            "model": format!("{}:tpo", ctx.model_id),
            "messages": [{"role": "user", "content": "word ".repeat(16)}],
            "max_tokens": 64,
        });
        assert!(chat(body.to_string().as_bytes(), &ctx).is_ok());
    }
}
