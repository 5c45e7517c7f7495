//! `tpo models inspect DIR`: what a model folder is, what `tpo` reads or infers from it and
//! its load-time self-check, as a typed report whose [`Display`] is the CLI's text. A policy
//! folder (genai_config.json) is inspected here; a reward folder by
//! [`crate::reward::inspect`]. It is NOT the flag parsing nor the printing (the CLI's).

use std::fmt;
use std::path::Path;

use crate::engine::self_check::PolicyCheck;
use crate::engine::{Engine, EngineOptions};
use crate::model::{DecoderConfig, ModelDir};
use crate::reward::inspect::RewardInspection;

/// What inspecting a model folder found.
#[derive(Debug)]
pub enum Inspection {
    Policy(PolicyInspection),
    Reward(RewardInspection),
}

/// What inspecting a policy folder found.
#[derive(Debug)]
pub enum PolicyInspection {
    /// `genai_config.json` is there but the folder does not open.
    Unusable(crate::model::ModelError),
    /// The folder opens; `self_check` is the engine's start-up check, or why it failed.
    Opened {
        config: Box<DecoderConfig>,
        /// Whether the chat template is its own `chat_template.jinja`.
        template_file: bool,
        self_check: Result<PolicyCheck, crate::engine::EngineError>,
    },
}

impl Inspection {
    /// Inspects the model folder `dir` (ONNX Runtime must be loaded): a policy when it has a
    /// `genai_config.json`, else a reward model.
    pub fn of(dir: &Path) -> Result<Self, crate::Error> {
        if dir.join("genai_config.json").is_file() {
            Ok(Self::Policy(PolicyInspection::of(dir)))
        } else {
            Ok(Self::Reward(RewardInspection::of(dir)?))
        }
    }

    /// Whether the folder loads and passes its self-check.
    pub fn usable(&self) -> bool {
        match self {
            Self::Policy(p) => matches!(
                p,
                PolicyInspection::Opened {
                    self_check: Ok(_),
                    ..
                }
            ),
            Self::Reward(r) => r.usable(),
        }
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Policy(p) => p.fmt(f),
            Self::Reward(r) => r.fmt(f),
        }
    }
}

impl PolicyInspection {
    /// Opens the policy folder `dir` and starts an engine on it to run its self-check.
    pub fn of(dir: &Path) -> Self {
        let model = match ModelDir::open(dir) {
            Ok(m) => m,
            Err(e) => return Self::Unusable(e),
        };
        let self_check = Engine::start(&model, EngineOptions::default())
            .map(|engine| engine.self_check().clone());
        Self::Opened {
            config: Box::new(model.config.clone()),
            template_file: dir.join("chat_template.jinja").is_file(),
            self_check,
        }
    }
}

impl fmt::Display for PolicyInspection {
    /// The report's lines, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, template_file, self_check) = match self {
            Self::Unusable(e) => {
                return writeln!(
                    f,
                    "kind             policy (genai_config.json), NOT USABLE: {e}"
                )
            }
            Self::Opened {
                config,
                template_file,
                self_check,
            } => (config, *template_file, self_check),
        };
        writeln!(
            f,
            "kind             policy: {} decoder, {} layers, {} heads / {} kv heads of {}, vocab {}",
            c.model_type, c.num_layers, c.num_heads, c.num_kv_heads, c.head_size, c.vocab_size
        )?;
        writeln!(
            f,
            "context          {} tokens; eos {:?}, pad {}",
            c.context_length, c.eos_token_ids, c.pad_token_id
        )?;
        writeln!(
            f,
            "sliding window   {}",
            c.sliding_window.map_or_else(
                || "none".to_string(),
                |w| format!(
                    "{} positions (--max-seq-len must be at least this)",
                    w.window_size
                )
            )
        )?;
        writeln!(
            f,
            "chat template    {}",
            if template_file {
                "chat_template.jinja"
            } else {
                "tokenizer_config.json \"chat_template\""
            }
        )?;
        writeln!(
            f,
            "graph            {} ({}position_ids)",
            c.filename,
            if c.position_ids_name.is_some() {
                ""
            } else {
                "no "
            }
        )?;
        match self_check {
            Ok(check) => writeln!(
                f,
                "self-check       passed: prompts of {:?} tokens alone vs batched differ by \
                 {:.1e} (padded prefill) and {:.1e} (ragged decode) of the logits' scale \
                 (tolerance {}), {:.0} ms",
                check.prompt_tokens,
                check.prefill_difference,
                check.decode_difference,
                check.tolerance,
                check.seconds * 1e3
            )?,
            Err(e) => writeln!(f, "self-check       FAILED: {e}")?,
        }
        if let Ok(check) = self_check {
            writeln!(
                f,
                "one-token steps  differ from multi-token steps by {:.1e} of the logits' scale: {}",
                check.one_token_step_difference,
                if check.one_token_steps_differ() {
                    "the prefix cache reuses only rows of multi-token steps"
                } else {
                    "every cached row is reused"
                }
            )?;
        }
        writeln!(
            f,
            "config file      genai_config.json is present (the exporter's); tpo writes none"
        )
    }
}
