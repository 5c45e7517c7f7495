//! Searches through the chat endpoint: the `tpo` extension or a `:tpo`/`:bon`/`:darwin`
//! model id runs `search::run` on the shared engine and reward service. Answered whole
//! (with a `tpo` summary and, on request, the trace) or streamed: one progress chunk per
//! step (`choices: []` plus a `tpo` object, which the official client accepts), then the
//! answer, then usage, then `[DONE]`. Dropping the response drops the search future, which
//! cancels its engine requests.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;

use crate::reward::RewardService;
use crate::search::{self, StepEvent, Trace};

use super::admission::Ticket;
use super::error::ApiError;
use super::metrics;
use super::schema::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatMessageOut, ChunkDelta, ChunkTpo,
    SearchProgress, SearchSummary, Usage,
};
use super::stream::{chunk_id, data_event, done_event, error_event, unix_now, Frame};
use super::validate::SearchJob;
use super::ServerState;

fn rewards<'a>(state: &'a ServerState, job: &SearchJob) -> Result<&'a RewardService, ApiError> {
    state.app.reward(&job.reward_model).ok_or_else(|| {
        ApiError::invalid(
            "tpo.reward_model",
            format!("reward model {:?} is not loaded", job.reward_model),
        )
    })
}

fn summary(job: &SearchJob, trace: &Trace) -> SearchSummary {
    let steps = match &trace.darwin {
        Some(d) => d.iterations.len(),
        None => trace.steps.len(),
    };
    SearchSummary {
        strategy: job.params.strategy().as_str(),
        steps,
        policy_calls: trace.totals.requests,
        completions: trace.totals.completions,
        reward_scorings: trace.totals.rm_inputs,
        reward_model: job.reward_model.clone(),
        best_reward: trace.final_reward,
        dropped: trace.dropped.values().sum(),
        dropped_by_reason: trace.dropped.clone(),
        all_dropped: trace.all_dropped,
        seconds: trace.totals.seconds,
        trace: job
            .return_trace
            .then(|| serde_json::to_value(trace).ok())
            .flatten(),
    }
}

fn usage(trace: &Trace) -> Usage {
    Usage::new(trace.totals.prompt_tokens, trace.totals.tokens_generated)
}

fn record(job: &SearchJob, trace: &Trace) {
    let s = summary(job, trace);
    metrics::search_done(s.strategy, s.steps);
    metrics::search_dropped(
        trace.dropped.iter().map(|(r, n)| (r.as_str(), *n)),
        trace.all_dropped,
    );
    metrics::tokens(trace.totals.prompt_tokens, trace.totals.tokens_generated);
}

fn progress(event: StepEvent) -> SearchProgress {
    SearchProgress {
        step: event.step,
        depth: event.depth,
        best_reward: Some(event.best_reward).filter(|r| r.is_finite()),
        kept: event.kept,
        dropped: event.dropped,
        candidates: event.candidates,
        tpo_step: event.tpo_step,
        darwin_iteration: event.darwin_iteration,
    }
}

/// Runs the search to the end.
pub async fn complete(
    state: &ServerState,
    job: SearchJob,
    model: &str,
) -> Result<serde_json::Value, ApiError> {
    let rewards = rewards(state, &job)?;
    let trace = search::run(
        &state.app.engine,
        rewards,
        &job.query,
        job.reference.as_deref(),
        &job.params,
        &mut |_| {},
    )
    .await?;
    record(&job, &trace);
    let body = ChatCompletion {
        id: chunk_id("chatcmpl"),
        object: "chat.completion",
        created: unix_now(),
        model: model.to_string(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessageOut {
                role: "assistant",
                content: trace.final_answer.clone(),
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: usage(&trace),
        tpo: Some(summary(&job, &trace)),
    };
    serde_json::to_value(body).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}

/// Streams the search's progress, then its answer.
pub fn stream(
    state: Arc<ServerState>,
    job: SearchJob,
    model: String,
    ticket: Ticket,
    started: Instant,
) -> impl Stream<Item = Result<Frame, Infallible>> {
    async_stream::stream! {
        let _ticket = ticket;
        let id = chunk_id("chatcmpl");
        let created = unix_now();
        let chunk = |choices: Vec<ChatChunkChoice<'_>>, usage: Option<Usage>, tpo: Option<ChunkTpo>| {
            data_event(&ChatChunk {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model: &model,
                choices,
                usage,
                tpo,
            })
        };
        let rewards = match rewards(&state, &job) {
            Ok(r) => r.clone(),
            Err(e) => {
                yield Ok(error_event(&e));
                yield Ok(done_event());
                return;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StepEvent>();
        let mut on_step = move |e: &StepEvent| {
            let _ = tx.send(e.clone());
        };
        let run = search::run(
            &state.app.engine,
            &rewards,
            &job.query,
            job.reference.as_deref(),
            &job.params,
            &mut on_step,
        );
        tokio::pin!(run);
        let result = loop {
            let next = tokio::select! {
                Some(event) = rx.recv() => Err(event),
                result = &mut run => Ok(result),
            };
            match next {
                Err(event) => yield Ok(chunk(Vec::new(), None, Some(ChunkTpo::Progress(progress(event))))),
                Ok(result) => break result,
            }
        };
        while let Ok(event) = rx.try_recv() {
            yield Ok(chunk(Vec::new(), None, Some(ChunkTpo::Progress(progress(event)))));
        }
        match result {
            Ok(trace) => {
                record(&job, &trace);
                let delta = |role, content, finish| {
                    vec![ChatChunkChoice {
                        index: 0,
                        delta: ChunkDelta { role, content },
                        logprobs: None,
                        finish_reason: finish,
                    }]
                };
                yield Ok(chunk(delta(Some("assistant"), Some(""), None), None, None));
                yield Ok(chunk(delta(None, Some(&trace.final_answer), None), None, None));
                let summary = ChunkTpo::Summary(summary(&job, &trace));
                yield Ok(chunk(delta(None, None, Some("stop")), None, Some(summary)));
                if job.include_usage {
                    yield Ok(chunk(Vec::new(), Some(usage(&trace)), None));
                }
                metrics::request_done("chat", 200, started.elapsed().as_secs_f64());
            }
            Err(e) => {
                let e = ApiError::from(e);
                metrics::request_done("chat", e.status.as_u16(), started.elapsed().as_secs_f64());
                yield Ok(error_event(&e));
            }
        }
        yield Ok(done_event());
    }
}
