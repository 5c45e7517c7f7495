//! `tpo models list`: the models commands take by name. `tpo models inspect DIR`: what a
//! model folder is, what `tpo` reads or infers from it, its load-time self-check, and the
//! config file it would write (`--write` writes it).

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::app::inspect::{Inspection, PolicyInspection};

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// The models commands take by name (--model f32|f16|q4, --reward-model judge|…): where
    /// each lives, whether it is exported, and the quality gate a quantized format passed.
    List,
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
    let args = match args.command {
        ModelsCommand::List => {
            tpo_engine::app::catalog::catalog()
                .iter()
                .for_each(|entry| print!("{entry}"));
            return Ok(ExitCode::SUCCESS);
        }
        ModelsCommand::Inspect(args) => args,
    };
    tpo_engine::paths::init_runtime()?;
    if !args.dir.is_dir() {
        println!("{} is not a folder", args.dir.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("folder           {}", args.dir.display());
    let report = Inspection::of(&args.dir)?;
    print!("{report}");
    if args.write {
        match &report {
            Inspection::Policy(PolicyInspection::Unusable(_)) => {}
            Inspection::Policy(_) => {
                println!("--write          nothing to write for a policy folder");
            }
            Inspection::Reward(r) => {
                if let Some(path) = r.write(&args.dir)? {
                    println!("wrote            {}", path.display());
                }
            }
        }
    }
    Ok(if report.usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
