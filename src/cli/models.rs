//! `tpo models inspect DIR`: what a model folder is, what `tpo` reads or infers from it, its
//! load-time self-check, and the config file it would write (`--write` writes it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tpo_engine::engine::{Engine, EngineOptions};
use tpo_engine::model::ModelDir;
use tpo_engine::reward::{self, folder, resolve, RewardConfigFile, RewardOptions};

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// Inspect a policy or reward folder: its kind, what tpo infers, the self-check.
    ///
    /// Examples:
    ///   tpo models inspect models/smollm2-judge-optimum
    ///   tpo models inspect --write path/to/my-optimum-rm
    #[command(verbatim_doc_comment)]
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The folder: a policy (genai_config.json) or a reward model (reward_config.json, an
    /// optimum sequence-classification export, a sentence-transformers encoder).
    dir: PathBuf,
    /// Write the settled reward_config.json into the folder (a reward folder whose config
    /// was inferred; fields the folder's own reward_config.json gives are kept).
    #[arg(long)]
    write: bool,
}

pub fn run(args: ModelsArgs) -> Result<ExitCode, tpo_engine::Error> {
    let ModelsCommand::Inspect(args) = args.command;
    tpo_engine::paths::init_runtime()?;
    if !args.dir.is_dir() {
        println!("{} is not a folder", args.dir.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("folder           {}", args.dir.display());
    if args.dir.join("genai_config.json").is_file() {
        inspect_policy(&args.dir, args.write)
    } else {
        inspect_reward(&args.dir, args.write)
    }
}

fn inspect_policy(dir: &Path, write: bool) -> Result<ExitCode, tpo_engine::Error> {
    let model = match ModelDir::open(dir) {
        Ok(m) => m,
        Err(e) => {
            println!("kind             policy (genai_config.json), NOT USABLE: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let c = &model.config;
    println!(
        "kind             policy: {} decoder, {} layers, {} heads / {} kv heads of {}, vocab {}",
        c.model_type, c.num_layers, c.num_heads, c.num_kv_heads, c.head_size, c.vocab_size
    );
    println!(
        "context          {} tokens; eos {:?}, pad {}",
        c.context_length, c.eos_token_ids, c.pad_token_id
    );
    println!(
        "sliding window   {}",
        c.sliding_window.map_or_else(
            || "none".to_string(),
            |w| format!(
                "{} positions (--max-seq-len must be at least this)",
                w.window_size
            )
        )
    );
    println!(
        "chat template    {}",
        if dir.join("chat_template.jinja").is_file() {
            "chat_template.jinja"
        } else {
            "tokenizer_config.json \"chat_template\""
        }
    );
    println!(
        "graph            {} ({}position_ids)",
        c.filename,
        if c.position_ids_name.is_some() {
            ""
        } else {
            "no "
        }
    );
    let status = match Engine::start(&model, EngineOptions::default()) {
        Ok(engine) => {
            let check = engine.self_check();
            println!(
                "self-check       passed: prompts of {:?} tokens alone vs batched differ by \
                 {:.1e} (padded prefill) and {:.1e} (ragged decode) of the logits' scale \
                 (tolerance {}), {:.0} ms",
                check.prompt_tokens,
                check.prefill_difference,
                check.decode_difference,
                check.tolerance,
                check.seconds * 1e3
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("self-check       FAILED: {e}");
            ExitCode::FAILURE
        }
    };
    println!("config file      genai_config.json is present (the exporter's); tpo writes none");
    if write {
        println!("--write          nothing to write for a policy folder");
    }
    Ok(status)
}

fn inspect_reward(dir: &Path, write: bool) -> Result<ExitCode, tpo_engine::Error> {
    let file = RewardConfigFile::read(dir)?;
    let given = dir.join(reward::config::CONFIG_FILE).is_file();
    let onnx = dir.join(file.onnx());
    if !onnx.is_file() {
        println!(
            "kind             NOT A MODEL FOLDER: no genai_config.json (policy) and no graph {}",
            onnx.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let session =
        tpo_engine::runtime::open_session(&onnx, tpo_engine::runtime::SessionOptions::default())?;
    let outline = folder::GraphOutline::of(&session);
    drop(session);
    println!(
        "graph            inputs {}; outputs {}",
        outline.inputs.join(", "),
        outline
            .outputs
            .iter()
            .map(|o| format!(
                "{} {:?}{}",
                o.name,
                o.dims,
                if o.f32 { "" } else { " (not float32)" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let resolved = match resolve::resolve(dir, file, &outline) {
        Ok(r) => r,
        Err(e) => {
            println!("kind             reward model, NOT USABLE: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = &resolved.config;
    println!(
        "kind             reward model: {}{}",
        resolve::json_name(&config.kind),
        config
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    println!(
        "reward_config    {}",
        if given {
            "reward_config.json present; fields it does not give are inferred"
        } else {
            "absent: every field inferred"
        }
    );
    if resolved.inferred.is_empty() {
        println!("inferred         nothing (reward_config.json gives every field)");
    }
    for (i, line) in resolved.inferred.iter().enumerate() {
        let label = if i == 0 { "inferred" } else { "" };
        println!("{label:<17}{} = {} ({})", line.field, line.value, line.from);
    }
    let options = RewardOptions {
        self_check_both_sides: true,
        ..RewardOptions::default()
    };
    let status = match reward::load_dir(dir, None, options) {
        Ok(model) => {
            let line = model
                .load_report()
                .map(|r| r.self_check_line())
                .unwrap_or_default();
            println!("self-check       {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("self-check       FAILED: {e}");
            ExitCode::FAILURE
        }
    };
    let json = serde_json::to_string_pretty(config).map_err(|e| {
        tpo_engine::reward::RewardError::Internal(format!("serializing the config: {e}"))
    })?;
    println!("reward_config.json it would write:\n{json}");
    if write {
        let path = dir.join(reward::config::CONFIG_FILE);
        std::fs::write(&path, format!("{json}\n")).map_err(|source| {
            tpo_engine::reward::RewardError::Io {
                path: path.clone(),
                source,
            }
        })?;
        println!("wrote            {}", path.display());
    }
    Ok(status)
}
