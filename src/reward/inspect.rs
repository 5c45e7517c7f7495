//! `tpo models inspect` on a reward folder: what its graph offers, what the settled config is
//! (and which fields were inferred), the load-time self-check, and the `reward_config.json`
//! it would write. A typed report with the CLI's text as its [`Display`]; it is NOT where the
//! folder is found (the caller passes it) nor where the report is printed.

use std::fmt;
use std::path::{Path, PathBuf};

use super::folder::GraphOutline;
use super::resolve::{self, Resolved};
use super::{config, RewardConfigFile, RewardError, RewardOptions};

/// What inspecting a reward folder found.
#[derive(Debug)]
pub enum RewardInspection {
    /// No graph where the config (given or default) points: not a model folder at all.
    NoGraph { onnx: PathBuf },
    /// The graph opens but the config cannot be settled.
    Unusable {
        outline: GraphOutline,
        error: RewardError,
    },
    /// The config settles; `self_check` is the load's self-check line, or why loading failed.
    Usable {
        outline: GraphOutline,
        resolved: Box<Resolved>,
        /// Whether the folder has its own `reward_config.json`.
        given: bool,
        self_check: Result<String, RewardError>,
        /// The settled config as `reward_config.json` would hold it.
        json: String,
    },
}

impl RewardInspection {
    /// Inspects the reward folder `dir` (ONNX Runtime must be loaded).
    pub fn of(dir: &Path) -> Result<Self, RewardError> {
        let file = RewardConfigFile::read(dir)?;
        let given = dir.join(config::CONFIG_FILE).is_file();
        let onnx = dir.join(file.onnx());
        if !onnx.is_file() {
            return Ok(Self::NoGraph { onnx });
        }
        let session =
            crate::runtime::open_session(&onnx, crate::runtime::SessionOptions::default())?;
        let outline = GraphOutline::of(&session);
        drop(session);
        let resolved = match resolve::resolve(dir, file, &outline) {
            Ok(r) => r,
            Err(error) => return Ok(Self::Unusable { outline, error }),
        };
        let options = RewardOptions {
            self_check_both_sides: true,
            ..RewardOptions::default()
        };
        let self_check = super::load_dir(dir, None, options).map(|model| {
            model
                .load_report()
                .map(|r| r.self_check_line())
                .unwrap_or_default()
        });
        let json = serde_json::to_string_pretty(&resolved.config)
            .map_err(|e| RewardError::Internal(format!("serializing the config: {e}")))?;
        Ok(Self::Usable {
            outline,
            resolved: Box::new(resolved),
            given,
            self_check,
            json,
        })
    }

    /// Whether the folder loads and passes its self-check.
    pub fn usable(&self) -> bool {
        matches!(
            self,
            Self::Usable {
                self_check: Ok(_),
                ..
            }
        )
    }

    /// Writes the settled `reward_config.json` into `dir`; the path written, or `None` when
    /// there was no settled config to write.
    pub fn write(&self, dir: &Path) -> Result<Option<PathBuf>, RewardError> {
        let Self::Usable { json, .. } = self else {
            return Ok(None);
        };
        let path = dir.join(config::CONFIG_FILE);
        std::fs::write(&path, format!("{json}\n")).map_err(|source| RewardError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Some(path))
    }
}

fn write_outline(f: &mut fmt::Formatter<'_>, outline: &GraphOutline) -> fmt::Result {
    writeln!(
        f,
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
    )
}

impl fmt::Display for RewardInspection {
    /// The report's lines, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGraph { onnx } => writeln!(
                f,
                "kind             NOT A MODEL FOLDER: no genai_config.json (policy) and no graph {}",
                onnx.display()
            ),
            Self::Unusable { outline, error } => {
                write_outline(f, outline)?;
                writeln!(f, "kind             reward model, NOT USABLE: {error}")
            }
            Self::Usable {
                outline,
                resolved,
                given,
                self_check,
                json,
            } => {
                write_outline(f, outline)?;
                let config = &resolved.config;
                writeln!(
                    f,
                    "kind             reward model: {}{}",
                    resolve::json_name(&config.kind),
                    config
                        .description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )?;
                writeln!(
                    f,
                    "reward_config    {}",
                    if *given {
                        "reward_config.json present; fields it does not give are inferred"
                    } else {
                        "absent: every field inferred"
                    }
                )?;
                if resolved.inferred.is_empty() {
                    writeln!(
                        f,
                        "inferred         nothing (reward_config.json gives every field)"
                    )?;
                }
                for (i, line) in resolved.inferred.iter().enumerate() {
                    let label = if i == 0 { "inferred" } else { "" };
                    writeln!(f, "{label:<17}{} = {} ({})", line.field, line.value, line.from)?;
                }
                match self_check {
                    Ok(line) => writeln!(f, "self-check       {line}")?,
                    Err(e) => writeln!(f, "self-check       FAILED: {e}")?,
                }
                writeln!(f, "reward_config.json it would write:\n{json}")
            }
        }
    }
}
