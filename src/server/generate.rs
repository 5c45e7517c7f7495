//! Plain generations (chat and legacy completions): one engine request of `n` samples,
//! answered whole or streamed as chunks. Dropping the response (a client that hangs up)
//! drops the engine stream, which frees the request's KV slots at the scheduler's next
//! iteration.

use std::sync::Arc;
use std::time::Instant;

use futures::Stream;

use crate::engine::{EngineError, GenerateRequest, GenerationEvent, SampleOutput};

use super::admission::Ticket;
use super::error::ApiError;
use super::metrics;
use super::schema::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatMessageOut, ChoiceLogprobs,
    ChunkDelta, Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice, TokenLogprob,
    TopLogprob, Usage,
};
use super::stream::{chunk_id, data_event, done_event, error_event, unix_now, Frame};
use super::text::token_text;
use super::validate::Generation;
use super::ServerState;
use crate::model::TextStream;

/// Which API shape a generation answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Completion,
}

impl Shape {
    pub fn endpoint(self) -> &'static str {
        match self {
            Shape::Chat => "chat",
            Shape::Completion => "completions",
        }
    }
}

pub fn finish_reason(sample: &SampleOutput) -> &'static str {
    match sample.finish_reason {
        crate::engine::FinishReason::Stop => "stop",
        crate::engine::FinishReason::Length => "length",
    }
}

fn record_latencies(sample: &SampleOutput) {
    metrics::time_to_first_token(sample.time_to_first_token.as_secs_f64());
    if let Some(seconds) = sample.inter_token_seconds() {
        metrics::inter_token(seconds);
    }
}

fn logprob_entry(
    state: &ServerState,
    token: u32,
    logprob: f32,
    top: &[(u32, f32)],
) -> TokenLogprob {
    let tokenizer = state.app.engine.tokenizer();
    let text = token_text(tokenizer, token);
    TokenLogprob {
        bytes: text.as_bytes().to_vec(),
        token: text,
        logprob: logprob.max(-9999.0),
        top_logprobs: top
            .iter()
            .map(|&(t, lp)| {
                let s = token_text(tokenizer, t);
                TopLogprob {
                    bytes: s.as_bytes().to_vec(),
                    token: s,
                    logprob: lp.max(-9999.0),
                }
            })
            .collect(),
    }
}

/// Runs `job` to the end and builds the response body.
pub async fn complete(
    state: &ServerState,
    job: Generation,
    shape: Shape,
    model: &str,
) -> Result<serde_json::Value, ApiError> {
    let prompt_tokens = job.prompt.len();
    let samples = state
        .app
        .engine
        .generate(GenerateRequest::new(job.prompt, job.sampling).with_n(job.n))
        .await?;
    let completion_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();
    metrics::tokens(prompt_tokens, completion_tokens);
    let usage = Usage::new(prompt_tokens, completion_tokens);
    let created = unix_now();
    let mut texts = Vec::with_capacity(samples.len());
    for s in &samples {
        record_latencies(s);
        texts.push(
            s.text_in(state.app.engine.chat())
                .map_err(EngineError::from)?,
        );
    }
    let body = match shape {
        Shape::Chat => serde_json::to_value(ChatCompletion {
            id: chunk_id("chatcmpl"),
            object: "chat.completion",
            created,
            model: model.to_string(),
            choices: samples
                .iter()
                .zip(texts)
                .map(|(s, content)| ChatChoice {
                    index: s.index,
                    message: ChatMessageOut {
                        role: "assistant",
                        content,
                    },
                    logprobs: job.logprobs.map(|_| ChoiceLogprobs {
                        content: s
                            .tokens
                            .iter()
                            .enumerate()
                            .map(|(i, &t)| {
                                let top = s.top_logprobs.get(i).map(Vec::as_slice).unwrap_or(&[]);
                                logprob_entry(state, t, s.logprobs[i], top)
                            })
                            .collect(),
                    }),
                    finish_reason: finish_reason(s),
                })
                .collect(),
            usage,
            tpo: None,
        }),
        Shape::Completion => serde_json::to_value(Completion {
            id: chunk_id("cmpl"),
            object: "text_completion",
            created,
            model: model.to_string(),
            choices: samples
                .iter()
                .zip(texts)
                .map(|(s, text)| CompletionChoice {
                    index: s.index,
                    text,
                    logprobs: None,
                    finish_reason: finish_reason(s),
                })
                .collect(),
            usage,
        }),
    };
    body.map_err(|e| ApiError::internal(format!("encoding the response: {e}")))
}

/// One choice of a streamed chunk, before it takes the request's shape (the legacy shape
/// has no role and no logprobs).
struct ChunkChoice<'a> {
    index: usize,
    content: Option<&'a str>,
    /// The delta names the role (the first chunk of each chat choice).
    role: bool,
    logprobs: Option<ChoiceLogprobs>,
    finish: Option<&'a str>,
}

/// Streams `job` as server-sent events; `ticket` is held until the stream ends.
pub fn stream(
    state: Arc<ServerState>,
    job: Generation,
    shape: Shape,
    model: String,
    ticket: Ticket,
    started: Instant,
) -> Result<impl Stream<Item = Result<Frame, std::convert::Infallible>>, ApiError> {
    let prompt_tokens = job.prompt.len();
    let n = job.n;
    let mut events = state
        .app
        .engine
        .submit(GenerateRequest::new(job.prompt, job.sampling).with_n(n))?;
    let want_logprobs = job.logprobs.is_some();
    let include_usage = job.include_usage;
    let stop = job.stop;
    Ok(async_stream::stream! {
        let _ticket = ticket;
        let id = chunk_id(if shape == Shape::Chat { "chatcmpl" } else { "cmpl" });
        let created = unix_now();
        let object = if shape == Shape::Chat { "chat.completion.chunk" } else { "text_completion" };
        // One chunk in the request's shape: a choice, if any, and the usage.
        let chunk_with = |choice: Option<ChunkChoice<'_>>, usage: Option<Usage>| {
            match shape {
                Shape::Chat => data_event(&ChatChunk {
                    id: &id,
                    object,
                    created,
                    model: &model,
                    choices: choice
                        .map(|c| ChatChunkChoice {
                            index: c.index,
                            delta: ChunkDelta { role: c.role.then_some("assistant"), content: c.content },
                            logprobs: c.logprobs,
                            finish_reason: c.finish,
                        })
                        .into_iter()
                        .collect(),
                    usage,
                    tpo: None,
                }),
                Shape::Completion => data_event(&CompletionChunk {
                    id: &id,
                    object,
                    created,
                    model: &model,
                    choices: choice
                        .map(|c| CompletionChunkChoice {
                            index: c.index,
                            text: c.content.unwrap_or(""),
                            logprobs: None,
                            finish_reason: c.finish,
                        })
                        .into_iter()
                        .collect(),
                    usage,
                }),
            }
        };
        let chunk = |index: usize, content: Option<&str>, role: bool, logprobs: Option<ChoiceLogprobs>, finish: Option<&str>| {
            chunk_with(Some(ChunkChoice { index, content, role, logprobs, finish }), None)
        };
        if shape == Shape::Chat {
            for index in 0..n {
                yield Ok(chunk(index, Some(""), true, None, None));
            }
        }
        let mut texts: Vec<TextStream> = (0..n).map(|_| TextStream::new(&stop)).collect();
        let mut last_token_at: Vec<Option<Instant>> = vec![None; n];
        let mut finished = 0usize;
        let mut completion_tokens = 0usize;
        let mut failed: Option<u16> = None;
        while finished < n {
            let Some(event) = events.next().await else {
                yield Ok(error_event(&ApiError::internal("the engine stopped")));
                failed = Some(500);
                break;
            };
            match event {
                GenerationEvent::Token { index, token, logprob, top, .. } => {
                    let now = Instant::now();
                    match last_token_at.get(index).copied().flatten() {
                        Some(prev) => metrics::inter_token((now - prev).as_secs_f64()),
                        None => metrics::time_to_first_token((now - started).as_secs_f64()),
                    }
                    if let Some(slot) = last_token_at.get_mut(index) {
                        *slot = Some(now);
                    }
                    completion_tokens += 1;
                    let Some(text) = texts.get_mut(index) else { continue };
                    let piece = text.push(state.app.engine.tokenizer(), token);
                    let logprobs = want_logprobs.then(|| ChoiceLogprobs {
                        content: vec![logprob_entry(&state, token, logprob, &top)],
                    });
                    if !piece.is_empty() || logprobs.is_some() {
                        yield Ok(chunk(index, Some(&piece), false, logprobs, None));
                    }
                }
                GenerationEvent::Finished(sample) => {
                    finished += 1;
                    let final_text = sample.text_in(state.app.engine.chat()).unwrap_or_default();
                    let rest = texts
                        .get_mut(sample.index)
                        .map(|t| t.finish(&final_text))
                        .unwrap_or_default();
                    if !rest.is_empty() {
                        yield Ok(chunk(sample.index, Some(&rest), false, None, None));
                    }
                    yield Ok(chunk(sample.index, None, false, None, Some(finish_reason(&sample))));
                }
                GenerationEvent::Failed(e) => {
                    let e = ApiError::from(e);
                    failed = Some(e.status.as_u16());
                    yield Ok(error_event(&e));
                    break;
                }
            }
        }
        metrics::tokens(prompt_tokens, completion_tokens);
        if include_usage && failed.is_none() {
            let usage = Usage::new(prompt_tokens, completion_tokens);
            yield Ok(chunk_with(None, Some(usage)));
        }
        metrics::request_done(shape.endpoint(), failed.unwrap_or(200), started.elapsed().as_secs_f64());
        yield Ok(done_event());
    })
}
