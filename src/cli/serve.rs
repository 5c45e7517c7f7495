//! `tpo serve`: flags → one [`App`](tpo_engine::app::App) (policy engine + reward
//! services) → the HTTP server on a multi-threaded tokio runtime. Exit 0 after a clean
//! drain, 1 when it cannot start.

use std::process::ExitCode;
use std::time::Duration;

use tpo_engine::reward;
use tpo_engine::search::{DarwinOptions, SearchOptions, Strategy};
use tpo_engine::server::{self, ServeOptions};

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Bearer key `/v1` requests must carry [default: env TPO_API_KEY; none = open]. A
    /// flag shows in `ps`: prefer --api-key-file or the environment.
    #[arg(long, env = "TPO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File holding the bearer key (its first line; e.g. a mounted Kubernetes secret).
    #[arg(long, value_name = "PATH", conflicts_with = "api_key")]
    api_key_file: Option<std::path::PathBuf>,
    /// Sequences admitted at once (a sample, or one of a search's parallel candidates).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
    /// Requests that may wait for admission; more get 429 at once.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Seconds a request may take, waiting for admission and running together.
    #[arg(long, default_value_t = 600.0, value_parser = crate::cli::parse_seconds)]
    request_timeout: f64,
    /// Connections open at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10.0, value_parser = crate::cli::parse_seconds)]
    header_timeout: f64,
    /// Seconds a client may take to send a request's body (then 408).
    #[arg(long, default_value_t = 30.0, value_parser = crate::cli::parse_seconds)]
    body_timeout: f64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, default_value_t = 5.0, value_parser = crate::cli::parse_seconds)]
    keep_alive_timeout: f64,
    /// Seconds a client may accept no bytes of a pending response (a stream it stopped
    /// reading) before its connection is closed and its request cancelled.
    #[arg(long, default_value_t = 30.0, value_parser = crate::cli::parse_seconds)]
    write_timeout: f64,
    /// Bytes of a stream's events that may wait unread before its request is cancelled.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    stream_buffer_bytes: u64,
    /// Serve /metrics on this port (same host) instead of the API port, to keep it off the
    /// public address (see docs/serving.md).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Test hook: honour the x-tpo-inject-fault request header (never in production; only
    /// in builds with the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
    /// Seconds in-flight requests may still run after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0, value_parser = crate::cli::parse_seconds)]
    shutdown_grace: f64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    body_limit: u64,
    /// Model id in /v1/models [default: the model folder's name].
    #[arg(long)]
    served_model_name: Option<String>,
    /// Reward models to load (repeat): judge, similarity, bertscore, a folder (served under
    /// its folder's name) or NAME=DIR. The first is the default of searches and /v1/score.
    #[arg(long = "reward-model", value_name = "NAME|DIR|NAME=DIR", default_values_t = ["judge".to_string(), "similarity".to_string()])]
    reward_models: Vec<String>,
    /// Padded tokens per reward-model batch.
    #[arg(long, default_value_t = reward::DEFAULT_BATCH_TOKENS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    rm_batch_tokens: u32,
    /// max_tokens of plain requests that give none (capped by the context left).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    default_max_tokens: u32,
    /// Search defaults: samples per call (N).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    search_width: u32,
    /// Search defaults: TPO steps (D).
    #[arg(long, default_value_t = 2)]
    search_depth: u32,
    /// Search defaults: most tokens per policy call.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    search_max_new_tokens: u32,
    /// Search defaults: sampling temperature and top-p.
    #[arg(long, default_value_t = 0.7)]
    search_temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    search_top_p: f32,
    /// Search defaults: seed (a request's `seed` overrides it).
    #[arg(long, default_value_t = 7)]
    search_seed: u64,
    /// Search defaults: DARWIN's M, m, k and iterations.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    search_mutations: u32,
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    search_replace_every: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    search_keep: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    search_iterations: u32,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The key in `path`: its first line, trimmed; an empty or unreadable file is an error.
fn read_key_file(path: &std::path::Path) -> Result<String, tpo_engine::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        tpo_engine::server::ServerError::InvalidOptions(format!(
            "--api-key-file {}: {e}",
            path.display()
        ))
    })?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        return Err(tpo_engine::server::ServerError::InvalidOptions(format!(
            "--api-key-file {}: the file holds no key",
            path.display()
        ))
        .into());
    }
    Ok(key)
}

pub fn run(args: ServeArgs) -> Result<ExitCode, tpo_engine::Error> {
    server::launch::init_logging(args.log_format == "json");
    let search_defaults = SearchOptions {
        strategy: Strategy::Tpo,
        width: args.search_width as usize,
        depth: args.search_depth as usize,
        temperature: args.search_temperature,
        top_p: args.search_top_p,
        max_new_tokens: args.search_max_new_tokens as usize,
        seed: args.search_seed,
        darwin: DarwinOptions {
            mutations: args.search_mutations as usize,
            replace_every: args.search_replace_every as usize,
            keep: args.search_keep as usize,
            iterations: args.search_iterations as usize,
        },
    };
    // The defaults must make a valid search on their own.
    tpo_engine::search::SearchParams::new(search_defaults.clone())?;
    let options = args
        .model
        .app_options(&args.reward_models, args.rm_batch_tokens as usize)?;
    let model_id = server::launch::model_id(&options, args.served_model_name.clone());
    let (reward_models, default_reward_model) = server::launch::reward_names(&options)?;
    let open_app = move || server::launch::open_logged(&options, &reward_models);
    // A load failure is printed with the CLI's advice (the flags that get past it).
    let open = move || open_app().map_err(super::advice::Advised);
    let api_key = match &args.api_key_file {
        Some(path) => Some(read_key_file(path)?),
        None => args.api_key.filter(|k| !k.is_empty()),
    };
    let serve_options = ServeOptions {
        host: args.host,
        port: args.port,
        api_key,
        max_connections: args.max_connections as usize,
        header_timeout: Duration::from_secs_f64(args.header_timeout),
        body_timeout: Duration::from_secs_f64(args.body_timeout),
        keep_alive_timeout: Duration::from_secs_f64(args.keep_alive_timeout),
        write_timeout: Duration::from_secs_f64(args.write_timeout),
        stream_buffer_bytes: args.stream_buffer_bytes as usize,
        metrics_port: args.metrics_port,
        #[cfg(feature = "fault-injection")]
        fault_injection: args.enable_fault_injection,
        max_concurrent_requests: args.max_concurrent_requests,
        max_queue: args.max_queue,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
        body_limit: args.body_limit as usize,
        model_id,
        search_defaults,
        default_reward_model,
        default_max_tokens: args.default_max_tokens as usize,
    };
    server::launch::serve_blocking(open, serve_options)?;
    Ok(ExitCode::SUCCESS)
}
