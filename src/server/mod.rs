//! `tpo serve`: the OpenAI-compatible HTTP API over one engine and its reward services
//! (tokio + axum).
//!
//! Rooms: `body` (bytes → validated JSON fields), `schema` (the wire types and their
//! OpenAPI schemas), `validate` (requests → jobs, every range checked before admission),
//! `admission` (permits and the bounded queue: 429 instead of growth), `conn` (the accept
//! loop: connection limit, header / keep-alive / write-stall timeouts), `generate` (plain
//! chat and completions, whole or streamed), `search` (TPO / Best-of-N / DARWIN through
//! the chat endpoint), `text` (incremental detokenization for streams), `stream` (SSE
//! framing), `metrics` (Prometheus), `openapi` (the document), `error` (the one error
//! type and its OpenAI shape).
//!
//! A request goes: auth and drain check (middleware) → body read under the size limit and
//! the body deadline → fields checked and validated into a job on the blocking pool (JSON
//! parsing, chat templates and tokenization never run on the async workers) → admitted
//! (permits for its peak number of sequences) → run. Nothing is sent before admission, so
//! overload and bad input are real HTTP statuses, never a 200 followed by an error event.
//! One deadline (`--request-timeout`) covers the whole request: queueing and running.

mod admission;
mod body;
mod conn;
mod error;
mod generate;
pub mod launch;
pub mod metrics;
mod openapi;
mod schema;
mod search;
mod stream;
mod text;
mod validate;

#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzzing;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::App;
#[cfg(feature = "fault-injection")]
use crate::engine::InjectedFault;
use crate::reward::OwnedRewardInput;
use crate::search::SearchOptions;

pub use error::ApiError;

use admission::Admission;
use generate::Shape;
use schema::{Health, ModelCard, ModelList, ScoreResponse, ScoreResult};
use validate::{Job, Limits};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// Bearer key every `/v1` request must carry; `None` leaves the API open.
    pub api_key: Option<String>,
    /// Sequences (a sample, or one of a search's parallel candidates) admitted at once.
    pub max_concurrent_requests: u32,
    /// Requests that may wait for admission; beyond it a request gets 429.
    pub max_queue: usize,
    /// Longest a request may take, queueing and running together (one deadline).
    pub request_timeout: Duration,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this (408 otherwise).
    pub body_timeout: Duration,
    /// An idle keep-alive connection (no request, no bytes) closes after this.
    pub keep_alive_timeout: Duration,
    /// A connection whose client accepts no bytes of a pending response for this long is
    /// closed, cancelling the work behind it.
    pub write_timeout: Duration,
    /// Bytes of a stream's events that may wait unread before its request is cancelled.
    pub stream_buffer_bytes: usize,
    /// Serve `/metrics` on this port (on `host`) instead of the API port.
    pub metrics_port: Option<u16>,
    /// Test hook: honour the `x-tpo-inject-fault` header (the `fault-injection` feature
    /// only; never set in production).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fault_injection: bool,
    /// After SIGTERM/SIGINT, how long in-flight requests may still run.
    pub shutdown_grace: Duration,
    pub body_limit: usize,
    /// The policy's id in `/v1/models` (search ids add `:tpo`, `:bon`, `:darwin`).
    pub model_id: String,
    /// Settings of searches that a request leaves unset.
    pub search_defaults: SearchOptions,
    /// Reward model of searches that name none.
    pub default_reward_model: String,
    /// `max_tokens` of plain requests that give none (capped by the context left).
    pub default_max_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("starting the async runtime: {0}")]
    AsyncRuntime(std::io::Error),
    #[error("invalid server settings: {0}")]
    InvalidOptions(String),
    #[error("loading the models: {0}")]
    Load(String),
}

/// What every handler shares.
pub struct ServerState {
    pub app: App,
    pub options: ServeOptions,
    admission: Admission,
    /// Request bodies parsed and tokenized at once: one core fewer than the machine has
    /// (at least one), so huge prompts never take every core from the async workers that
    /// answer `/health` and stream tokens.
    validating: tokio::sync::Semaphore,
    draining: AtomicBool,
    started: u64,
}

impl ServerState {
    fn limits(&self) -> Limits<'_> {
        Limits {
            engine: &self.app.engine,
            model_id: &self.options.model_id,
            reward_models: self.app.rewards.keys().cloned().collect(),
            need_reference: self
                .app
                .rewards
                .iter()
                .filter(|(_, service)| service.needs_reference())
                .map(|(name, _)| name.clone())
                .collect(),
            search_defaults: &self.options.search_defaults,
            default_reward_model: &self.options.default_reward_model,
            default_max_tokens: self.options.default_max_tokens,
        }
    }

    /// Why the server cannot serve: a dead scheduler or scorer thread, named.
    fn dead_reason(&self) -> Option<String> {
        if let Some(reason) = self.app.engine.dead_reason() {
            return Some(format!("the engine's scheduler thread died: {reason}"));
        }
        self.app.rewards.iter().find_map(|(name, service)| {
            service
                .dead_reason()
                .map(|reason| format!("the scorer thread of reward model {name:?} died: {reason}"))
        })
    }

    fn metrics_snapshot(&self) -> metrics::Snapshot {
        let s = self.app.engine.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        metrics::Snapshot {
            queued_requests: self.admission.queued(),
            engine_waiting: load(&s.waiting),
            requests_running: self.admission.active(),
            permits_used: self.admission.permits_used(),
            running_sequences: load(&s.running),
            kv_slots_used: load(&s.kv_slots_used),
            kv_slots_cached: load(&s.kv_slots_cached),
            kv_slots: self.app.engine.kv_slots() as u64,
            decode_steps: load(&s.decode_steps),
            prefill_tokens: load(&s.prefill_tokens),
            prefix_hits: load(&s.prefix_hits),
            prefix_misses: load(&s.prefix_misses),
            prefix_reused_tokens: load(&s.prefix_reused_tokens),
            prefix_evictions: load(&s.prefix_evictions),
        }
    }
}

/// Binds, answers 503 ("loading") while `open` loads the models on a blocking thread, then
/// serves until SIGTERM/SIGINT, draining in-flight requests for up to the grace period.
/// `bound` learns the address once listening (before the models are loaded).
pub async fn serve<E: std::fmt::Display + Send + 'static>(
    open: impl FnOnce() -> Result<App, E> + Send + 'static,
    options: ServeOptions,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ServerError> {
    if options.max_concurrent_requests == 0 {
        return Err(ServerError::InvalidOptions(
            "--max-concurrent-requests must be at least 1".into(),
        ));
    }
    metrics::install();
    let addr = format!("{}:{}", options.host, options.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    // One socket, two handles: the loading answerer serves the first until the models are
    // in, then the real router takes the second (connections wait in the backlog between).
    let std_listener = listener.into_std().map_err(ServerError::Serve)?;
    let serving_listener = std_listener.try_clone().map_err(ServerError::Serve)?;
    let loading_listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(ServerError::Serve)?;
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let loading_server = tokio::spawn(async move {
        let router = Router::new().fallback(loading_answer);
        let _ = axum::serve(loading_listener, router)
            .with_graceful_shutdown(async move {
                let _ = loaded_rx.await;
            })
            .await;
    });
    tracing::info!(%local, "tpo serve bound; loading the models");
    let loading = tokio::task::spawn_blocking(open);
    let app = tokio::select! {
        opened = loading => opened,
        _ = shutdown_signal() => {
            tracing::info!("shutdown signal while loading: exiting");
            return Ok(());
        }
    };
    let _ = loaded_tx.send(());
    // Open loading-time connections get a moment to finish their 503s.
    let _ = tokio::time::timeout(Duration::from_secs(1), loading_server).await;
    let app = match app {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => return Err(ServerError::Load(e.to_string())),
        Err(e) => return Err(ServerError::Load(format!("the loading thread failed: {e}"))),
    };
    let listener =
        tokio::net::TcpListener::from_std(serving_listener).map_err(ServerError::Serve)?;
    let grace = options.shutdown_grace;
    let conn_limits = conn::ConnLimits {
        max_connections: options.max_connections,
        header_read_timeout: options.header_timeout,
        keep_alive_timeout: options.keep_alive_timeout,
        write_stall_timeout: options.write_timeout,
    };
    let metrics_listener = match options.metrics_port {
        Some(port) => {
            let addr = format!("{}:{port}", options.host);
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let local = l.local_addr().map_err(ServerError::Serve)?;
            tracing::info!(%local, "metrics on their own port");
            Some(l)
        }
        None => None,
    };
    warn_if_open(&options.host, options.api_key.is_some());
    let state = Arc::new(ServerState {
        admission: Admission::new(options.max_concurrent_requests, options.max_queue),
        validating: tokio::sync::Semaphore::new(validating_permits()),
        app,
        options,
        draining: AtomicBool::new(false),
        started: stream::unix_now(),
    });
    let router = router(Arc::clone(&state));
    tracing::info!(%local, model = %state.options.model_id, "tpo serve ready");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = metrics_listener {
        let metrics_router = metrics_router(Arc::clone(&state));
        tokio::spawn(conn::serve(l, metrics_router, conn_limits, stop_rx.clone()));
    }
    let (hard_tx, hard_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = Arc::clone(&state);
    let drainer = tokio::spawn(async move {
        shutdown_signal().await;
        drain_state.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            in_flight = drain_state.admission.active(),
            grace_s = grace.as_secs_f64(),
            "shutdown signal: draining"
        );
        let deadline = Instant::now() + grace;
        while (drain_state.admission.active() > 0 || drain_state.admission.queued() > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(true);
        // Connections still open after the drain (slow readers, requests past the grace)
        // get one more second before the process exits.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = hard_tx.send(());
    });
    conn::serve(listener, router, conn_limits, stop_rx).await;
    // The listener has stopped; open connections finish (bounded by the drainer).
    let _ = hard_rx.await;
    drainer.abort();
    tracing::info!("tpo serve stopped");
    Ok(())
}

/// Warns when the API is open to the network without a key.
fn warn_if_open(host: &str, has_key: bool) {
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !has_key && !loopback {
        tracing::warn!(
            host,
            "serving WITHOUT an API key on a non-loopback address: anyone who can reach this \
             port can run requests; set --api-key-file, TPO_API_KEY or --api-key"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Every route, with auth on `/v1` and the request-id and tracing layers on all.
pub fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/score", post(score))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), gate));
    let mut router = Router::new().merge(api).route("/health", get(health));
    // With --metrics-port, /metrics lives on its own port only (its prefix-cache counters
    // tell a prober whether its prompt shares blocks with other users' prompts).
    if state.options.metrics_port.is_none() {
        router = router.route("/metrics", get(metrics_text));
    }
    router
        .route("/openapi.json", get(openapi::document))
        .route("/", get(viewer_page))
        .route("/ui", get(viewer_page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The metrics port's routes: `/metrics` only.
fn metrics_router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(state)
}

/// Refuses `/v1` requests while draining and without the API key.
async fn gate(State(state): State<Arc<ServerState>>, request: Request, next: Next) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        let e = ApiError::draining();
        metrics::rejected(e.reason());
        return e.into_response();
    }
    if let Some(key) = &state.options.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time in the key's content (its length is not secret).
        let ok: bool = given.as_bytes().ct_eq(key.as_bytes()).into();
        if !ok {
            let e = ApiError::unauthorized();
            metrics::rejected(e.reason());
            return e.into_response();
        }
    }
    next.run(request).await
}

/// The search viewer (`crate::viewer`): a static page, so no key is needed to load it; the
/// searches it runs go through `/v1` with the key typed into it.
async fn viewer_page() -> Response {
    static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(crate::viewer::live_page);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    let e = ApiError::not_found(request.uri().path());
    metrics::rejected(e.reason());
    e.into_response()
}

async fn method_not_allowed() -> Response {
    let e = ApiError::method_not_allowed();
    metrics::rejected("invalid");
    e.into_response()
}

/// A refused request: counted, logged, answered.
fn refuse(endpoint: &'static str, started: Instant, e: ApiError) -> Response {
    metrics::rejected(e.reason());
    metrics::request_done(endpoint, e.status.as_u16(), started.elapsed().as_secs_f64());
    if e.status.is_server_error() {
        tracing::error!(status = %e.status, message = %e.message, "request failed");
    } else {
        tracing::info!(status = %e.status, message = %e.message, param = ?e.param, "request refused");
    }
    e.into_response()
}

/// A stream's response: its work detached from the body (see `stream::detach`), cut off
/// at the request's deadline.
fn sse<S>(state: &ServerState, deadline: tokio::time::Instant, work: S) -> Response
where
    S: Stream<Item = Result<stream::Frame, Infallible>> + Send + 'static,
{
    let limit = state.options.request_timeout;
    let body = stream::detach(
        with_deadline(deadline, limit, work),
        state.options.stream_buffer_bytes,
    );
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}

/// Runs `work` until the request's deadline.
async fn timed<T>(
    state: &ServerState,
    deadline: tokio::time::Instant,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let limit = state.options.request_timeout;
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout(limit.as_secs_f64())))
}

/// Cuts a stream off at the request's deadline (with an error event and `[DONE]`).
fn with_deadline<S>(
    deadline: tokio::time::Instant,
    limit: Duration,
    inner: S,
) -> impl Stream<Item = Result<stream::Frame, Infallible>> + Send
where
    S: Stream<Item = Result<stream::Frame, Infallible>> + Send + 'static,
{
    async_stream::stream! {
        let inner = inner;
        futures::pin_mut!(inner);
        loop {
            match tokio::time::timeout_at(deadline, inner.next()).await {
                Ok(Some(item)) => yield item,
                Ok(None) => break,
                Err(_) => {
                    yield Ok(stream::error_event(&ApiError::timeout(limit.as_secs_f64())));
                    yield Ok(stream::done_event());
                    break;
                }
            }
        }
    }
}

/// The request's one deadline, from its arrival.
fn deadline_of(state: &ServerState) -> tokio::time::Instant {
    tokio::time::Instant::now() + state.options.request_timeout
}

/// The body, read under the size limit and the body deadline (itself within the request's).
async fn read_body(
    state: &ServerState,
    headers: &HeaderMap,
    body: Body,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, ApiError> {
    let body_deadline = deadline.min(tokio::time::Instant::now() + state.options.body_timeout);
    match tokio::time::timeout_at(
        body_deadline,
        body::read_json_body(headers, body, state.options.body_limit),
    )
    .await
    {
        Ok(read) => read,
        Err(_) => Err(ApiError::body_timeout(
            state.options.body_timeout.as_secs_f64(),
        )),
    }
}

/// Reads the body (under its limits), then parses and validates it with `validate` on the
/// blocking pool: JSON parsing, chat templates and tokenization are CPU work, and a large
/// prompt must never stall the async workers that serve every other request and `/health`.
async fn validated<T: Send + 'static>(
    state: &Arc<ServerState>,
    headers: &HeaderMap,
    body: Body,
    deadline: tokio::time::Instant,
    validate: impl FnOnce(&[u8], &ServerState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let bytes = read_body(state, headers, body, deadline).await?;
    // The semaphore is never closed, so acquiring only waits for a turn.
    let _turn = state
        .validating
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("validating the request: {e}")))?;
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || validate(&bytes, &state))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("validating the request: {e}"))))
}

/// How many request bodies are validated (parsed, tokenized) at once: the cores less one.
fn validating_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

fn log_user(user: Option<&str>) {
    if let Some(user) = user {
        tracing::info!(user = %user, "request user");
    }
}

/// The fault a test asks for with `x-tpo-inject-fault` (only when the server runs with the
/// hidden `--enable-fault-injection`): `panic-scheduler[:K]` panics the scheduler thread
/// once the request has generated K tokens (default 1). Only in `fault-injection` builds.
#[cfg(feature = "fault-injection")]
fn injected_fault(state: &ServerState, headers: &HeaderMap) -> Option<InjectedFault> {
    if !state.options.fault_injection {
        return None;
    }
    let value = headers.get("x-tpo-inject-fault")?.to_str().ok()?;
    let (name, after) = value.split_once(':').unwrap_or((value, "1"));
    let after = after.trim().parse().ok()?;
    match name.trim() {
        "panic-scheduler" => Some(InjectedFault::PanicAfter(after)),
        "step-error" => Some(InjectedFault::StepErrorAfter(after)),
        "nan-logits" => Some(InjectedFault::NanLogitsAfter(after)),
        _ => None,
    }
}

/// Sequences a chat job decodes at once: its admission cost.
fn cost_of(job: &Job) -> usize {
    match job {
        Job::Generate(g) => g.n,
        Job::Search(s) => s.params.peak_sequences(),
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", request_body = schema::ChatCompletionRequest,
    responses((status = 200, description = "A chat completion (or an SSE stream of chunks with stream: true)", body = schema::ChatCompletion),
        (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
        (status = 404, body = error::ErrorBody), (status = 408, body = error::ErrorBody),
        (status = 413, body = error::ErrorBody), (status = 415, body = error::ErrorBody),
        (status = 429, body = error::ErrorBody), (status = 500, body = error::ErrorBody),
        (status = 503, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_generation(state, headers, body, "chat", Shape::Chat, |bytes, state| {
        let req: schema::ChatCompletionRequest = body::parse(bytes, &schema::CHAT_FIELDS)?;
        log_user(req.user.as_deref());
        let job = validate::chat_job(&req, &state.limits())?;
        Ok((req.model, job))
    })
    .await
}

/// The flow the chat and legacy completion endpoints share: the body read and decoded into
/// a model id and a job by `decode` (in a blocking task), an injected fault set on a
/// generation, admission, then the answer in `shape`: one JSON body, or an SSE stream.
async fn run_generation(
    state: Arc<ServerState>,
    headers: HeaderMap,
    body: Body,
    endpoint: &'static str,
    shape: Shape,
    decode: impl FnOnce(&[u8], &ServerState) -> Result<(String, Job), ApiError> + Send + 'static,
) -> Response {
    let started = Instant::now();
    let deadline = deadline_of(&state);
    #[cfg(feature = "fault-injection")]
    let fault = injected_fault(&state, &headers);
    let job = validated(&state, &headers, body, deadline, move |bytes, state| {
        let (model, job) = decode(bytes, state)?;
        #[cfg(feature = "fault-injection")]
        let job = {
            let mut job = job;
            if let (Some(fault), Job::Generate(g)) = (fault, &mut job) {
                g.sampling = g.sampling.clone().with_fault(fault);
            }
            job
        };
        Ok((model, job))
    })
    .await;
    let (model, job) = match job {
        Ok(j) => j,
        Err(e) => return refuse(endpoint, started, e),
    };
    let ticket = match state.admission.admit(cost_of(&job), deadline).await {
        Ok(t) => t,
        Err(e) => return refuse(endpoint, started, e),
    };
    match job {
        Job::Generate(g) if g.stream => {
            match generate::stream(Arc::clone(&state), g, shape, model, ticket, started) {
                Ok(s) => sse(&state, deadline, s),
                Err(e) => refuse(endpoint, started, e),
            }
        }
        Job::Search(s) if s.stream => sse(
            &state,
            deadline,
            search::stream(Arc::clone(&state), *s, model, ticket, started),
        ),
        Job::Generate(g) => {
            let result = timed(
                &state,
                deadline,
                generate::complete(&state, g, shape, &model),
            )
            .await;
            drop(ticket);
            respond(endpoint, started, result)
        }
        Job::Search(s) => {
            let result = timed(&state, deadline, search::complete(&state, *s, &model)).await;
            drop(ticket);
            respond(endpoint, started, result)
        }
    }
}

fn respond(
    endpoint: &'static str,
    started: Instant,
    result: Result<serde_json::Value, ApiError>,
) -> Response {
    match result {
        Ok(body) => {
            metrics::request_done(endpoint, 200, started.elapsed().as_secs_f64());
            Json(body).into_response()
        }
        Err(e) => refuse(endpoint, started, e),
    }
}

#[utoipa::path(post, path = "/v1/completions", request_body = schema::CompletionRequest,
    responses((status = 200, description = "A text completion (or an SSE stream with stream: true)", body = schema::Completion),
        (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
        (status = 404, body = error::ErrorBody), (status = 408, body = error::ErrorBody),
        (status = 413, body = error::ErrorBody), (status = 415, body = error::ErrorBody),
        (status = 429, body = error::ErrorBody), (status = 500, body = error::ErrorBody),
        (status = 503, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn completions(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let endpoint = "completions";
    run_generation(
        state,
        headers,
        body,
        endpoint,
        Shape::Completion,
        |bytes, state| {
            let req: schema::CompletionRequest = body::parse(bytes, &schema::COMPLETION_FIELDS)?;
            log_user(req.user.as_deref());
            let job = validate::completion_job(&req, &state.limits())?;
            Ok((req.model, Job::Generate(job)))
        },
    )
    .await
}

/// Most items one `/v1/score` request may carry.
pub const MAX_SCORE_ITEMS: usize = 256;

#[utoipa::path(post, path = "/v1/score", request_body = schema::ScoreRequest,
    responses((status = 200, description = "One reward per item, in order", body = ScoreResponse),
        (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
        (status = 404, body = error::ErrorBody), (status = 408, body = error::ErrorBody),
        (status = 413, body = error::ErrorBody), (status = 415, body = error::ErrorBody),
        (status = 429, body = error::ErrorBody), (status = 500, body = error::ErrorBody),
        (status = 503, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn score(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let deadline = deadline_of(&state);
    let endpoint = "score";
    let work = async {
        let (req, name) = validated(&state, &headers, body, deadline, |bytes, state| {
            let req: schema::ScoreRequest = body::parse(bytes, &schema::SCORE_FIELDS)?;
            let name = validate::score_reward_model(&req, &state.limits())?;
            Ok((req, name))
        })
        .await?;
        let Some(rewards) = state.app.reward(&name).cloned() else {
            return Err(ApiError::internal(format!(
                "reward model {name:?} is listed but not loaded"
            )));
        };
        // Admitted by its size: one permit per item (capped at the capacity), as each item
        // is one sequence for the reward model, so a large batch cannot crowd out searches
        // for the price of one.
        let _ticket = state.admission.admit(req.items.len(), deadline).await?;
        let inputs = req
            .items
            .into_iter()
            .map(|i| OwnedRewardInput {
                prompt: i.prompt,
                response: i.response,
                reference: i.reference,
            })
            .collect();
        let scores = timed(&state, deadline, async {
            rewards.score(inputs).await.map_err(ApiError::from)
        })
        .await?;
        Ok(ScoreResponse {
            object: "list",
            reward_model: name,
            data: scores
                .into_iter()
                .enumerate()
                .map(|(index, s)| match s {
                    Ok(score) if score.is_finite() => ScoreResult {
                        index,
                        score: Some(score),
                        error: None,
                    },
                    Ok(score) => ScoreResult {
                        index,
                        score: None,
                        error: Some(format!("the reward model returned {score}")),
                    },
                    Err(e) => ScoreResult {
                        index,
                        score: None,
                        error: Some(e.to_string()),
                    },
                })
                .collect(),
        })
    };
    match work.await {
        Ok(body) => {
            metrics::request_done(endpoint, 200, started.elapsed().as_secs_f64());
            Json(body).into_response()
        }
        Err(e) => refuse(endpoint, started, e),
    }
}

#[utoipa::path(get, path = "/v1/models",
    responses((status = 200, description = "The model ids this server answers to", body = ModelList),
        (status = 401, body = error::ErrorBody), (status = 503, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn models(State(state): State<Arc<ServerState>>) -> Json<ModelList> {
    let reward_models: Vec<String> = state.app.rewards.keys().cloned().collect();
    let id = &state.options.model_id;
    let mut data = vec![ModelCard {
        id: id.clone(),
        object: "model",
        created: state.started,
        owned_by: "tpo-engine",
        strategy: None,
        reward_models: reward_models.clone(),
    }];
    for (suffix, strategy) in validate::SEARCH_SUFFIXES {
        data.push(ModelCard {
            id: format!("{id}:{suffix}"),
            object: "model",
            created: state.started,
            owned_by: "tpo-engine",
            strategy: Some(strategy.as_str()),
            reward_models: reward_models.clone(),
        });
    }
    Json(ModelList {
        object: "list",
        data,
    })
}

/// Every request while the models load: `/health` says `loading`, the rest get a 503 in
/// the error shape.
async fn loading_answer(uri: axum::http::Uri) -> Response {
    if uri.path() == "/health" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "loading",
                reason: None,
            }),
        )
            .into_response();
    }
    ApiError::loading().into_response()
}

#[utoipa::path(get, path = "/health",
    responses((status = 200, description = "Every model is loaded", body = Health),
        (status = 503, description = "Loading the models, or draining", body = Health)))]
async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let unavailable = |status, reason| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status, reason }),
        )
            .into_response()
    };
    if let Some(reason) = state.dead_reason() {
        return unavailable("dead", Some(reason));
    }
    if state.draining.load(Ordering::SeqCst) {
        return unavailable("draining", None);
    }
    Json(Health {
        status: "ok",
        reason: None,
    })
    .into_response()
}

#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn metrics_text(State(state): State<Arc<ServerState>>) -> Response {
    let text = metrics::render(&state.metrics_snapshot());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
