//! What `tpo serve` settles before the server starts: the served model id, the reward models'
//! served names (one name, one folder) and the default one, the app opener that logs what
//! each reward model inferred, the log format, and the runtime the server runs on until it
//! drains. It is NOT the flags (the CLI's) nor the serving itself ([`super::serve`]).

use crate::app::{App, AppOptions};

use super::{ServeOptions, ServerError};

/// Logs to stderr through `tracing`: text, or one JSON object per line (`json`); `RUST_LOG`
/// filters (default `info`). A second call keeps the first setting.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Serves on a multi-threaded tokio runtime (two workers: the models run on their own
/// threads) until the server has drained, printing the bound address on stderr
/// (`tpo serve: listening on http://ADDR`) once it listens.
pub fn serve_blocking<E: std::fmt::Display + Send + 'static>(
    open: impl FnOnce() -> Result<App, E> + Send + 'static,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::AsyncRuntime)?;
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    runtime.block_on(async move {
        tokio::spawn(async move {
            if let Ok(addr) = bound_rx.await {
                eprintln!("tpo serve: listening on http://{addr}");
            }
        });
        super::serve(open, options, Some(bound_tx)).await
    })
}

/// The id the policy is served under: `name` if given, else the policy folder's name.
pub fn model_id(options: &AppOptions, name: Option<String>) -> String {
    name.unwrap_or_else(|| {
        options
            .policy
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "policy".into())
    })
}

/// The reward models' served names in name order, and the default one (the first asked for,
/// else `judge`). Reward models are served under their names (a folder's own name, never its
/// path); two different folders may not share one.
pub fn reward_names(options: &AppOptions) -> Result<(Vec<String>, String), ServerError> {
    let mut seen = std::collections::BTreeMap::new();
    for source in &options.reward_models {
        if let Some(other) = seen.insert(source.name.clone(), source.dir.clone()) {
            if other != source.dir {
                return Err(ServerError::InvalidOptions(format!(
                    "two reward models are named {:?}: name one with --reward-model NAME=DIR",
                    source.name
                )));
            }
        }
    }
    let default = options
        .reward_models
        .first()
        .map(|source| source.name.clone())
        .unwrap_or_else(|| "judge".into());
    Ok((seen.into_keys().collect(), default))
}

/// Opens the app and logs, per reward model, what was inferred and its self-check, then how
/// long loading took.
pub fn open_logged(options: &AppOptions, reward_models: &[String]) -> Result<App, crate::Error> {
    let loading = std::time::Instant::now();
    let app = App::open(options)?;
    for (name, service) in &app.rewards {
        if let Some(report) = service.load_report() {
            for line in report.inferred_lines() {
                tracing::info!(reward_model = %name, "inferred {line}");
            }
            tracing::info!(reward_model = %name, "self-check {}", report.self_check_line());
        }
    }
    tracing::info!(
        seconds = loading.elapsed().as_secs_f64(),
        reward_models = ?reward_models,
        "models loaded"
    );
    Ok(app)
}
