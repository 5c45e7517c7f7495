//! A model folder on disk: its config, tokenizer, chat template and ONNX graph file.
//!
//! This room validates what a folder holds and names what is missing, and is the policy's
//! text side (`chat`: conversations into prompt tokens, generated tokens into text); it
//! does not run anything (the `engine` owns sessions and speaks token ids).

mod chat;
mod config;
mod detok;
mod tokenizer;

pub use chat::{text_of, ChatFormat};
pub use config::{DecoderConfig, SlidingWindow};
pub use detok::{find_stop, IncrementalText, TextStream};
pub use tokenizer::{ChatMessage, ChatTemplate, TokenId, Tokenizer, TurnPieces};

use std::path::{Path, PathBuf};

/// Name of the embedded default policy folder under `models/`.
pub const DEFAULT_POLICY: &str = "smollm2-135m-instruct";

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder {path} does not exist")]
    MissingFolder { path: PathBuf },
    #[error("model file {path} is missing; re-export the folder (`make setup`)")]
    MissingFile { path: PathBuf },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid model config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{path} is not a valid tokenizer: {reason}")]
    BadTokenizer { path: PathBuf, reason: String },
    #[error("chat template error: {0}")]
    BadTemplate(String),
    #[error("tokenizer error: {0}")]
    Tokenize(String),
}

/// A validated policy folder: `genai_config.json`, `tokenizer.json`, a chat template and
/// the ONNX file the config names.
pub struct ModelDir {
    pub path: PathBuf,
    pub config: DecoderConfig,
}

impl ModelDir {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if !path.is_dir() {
            return Err(ModelError::MissingFolder {
                path: path.to_path_buf(),
            });
        }
        let config = DecoderConfig::load(path)?;
        let dir = Self {
            path: path.to_path_buf(),
            config,
        };
        let onnx = dir.onnx_path();
        if !onnx.is_file() {
            return Err(ModelError::MissingFile { path: onnx });
        }
        Ok(dir)
    }

    pub fn onnx_path(&self) -> PathBuf {
        self.path.join(&self.config.filename)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, ModelError> {
        Tokenizer::load(&self.path)
    }

    pub fn chat_template(&self) -> Result<ChatTemplate, ModelError> {
        ChatTemplate::load(&self.path)
    }

    /// Bytes on disk of every file in the folder (graph, external data, tokenizer).
    pub fn size_bytes(&self) -> u64 {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
