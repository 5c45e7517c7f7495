//! Prompt files, the one reader of them: a text file with one prompt a line, or JSONL whose
//! objects carry a prompt (`prompt` or `instruction`, as AlpacaEval's files and our
//! `data/alpaca_eval/pairs.jsonl`) and optionally an `id` and a `reference` answer.
//!
//! [`parse_row`] reads one JSONL line into a [`PromptRow`] whose fields say what each key
//! held (absent, text, a number, something else), so each caller keeps its own rules on
//! top: `tpo search --file` wants `prompt` (and reports a bad line and goes on),
//! `tpo bench search` the first N rows with `prompt`, `tpo bench serve` ([`parse_prompts`])
//! plain lines or `instruction`/`prompt`. This module reads text; it does not decide where
//! a file is (that is the caller's, at the edge) and it runs nothing.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// What one key of a JSONL prompt row held.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Absent,
    Null,
    Text(String),
    /// A JSON number, as written.
    Number(String),
    /// Anything else (a bool, an array, an object).
    Other,
}

impl Field {
    fn of(value: Option<&Value>) -> Field {
        match value {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(Value::String(s)) => Field::Text(s.clone()),
            Some(Value::Number(n)) => Field::Number(n.to_string()),
            Some(_) => Field::Other,
        }
    }

    /// The text, when the key held a string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Field::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The text, when the key held a string that is not blank.
    pub fn non_blank(&self) -> Option<&str> {
        self.text().filter(|s| !s.trim().is_empty())
    }
}

/// One JSONL line of a prompt file, its keys as found.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    /// 1-based line number in the file.
    pub line: usize,
    pub id: Field,
    pub prompt: Field,
    pub instruction: Field,
    pub reference: Field,
}

/// Why a JSONL line is not a prompt row at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
}

/// Reads one JSONL line (`line`: its 1-based number).
pub fn parse_row(line: usize, text: &str) -> Result<PromptRow, RowError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RowError::NotJson(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(RowError::NotObject);
    };
    Ok(PromptRow {
        line,
        id: Field::of(object.get("id")),
        prompt: Field::of(object.get("prompt")),
        instruction: Field::of(object.get("instruction")),
        reference: Field::of(object.get("reference")),
    })
}

/// The non-blank lines of `text` with their 1-based numbers, a trailing `\r` removed.
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// What is wrong with a prompt file (a line of it, or the whole).
#[derive(Debug, thiserror::Error)]
pub enum PromptsError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("line {line} is not valid JSON: {message}")]
    NotJson { line: usize, message: String },
    #[error("line {line} has no non-empty string {fields}")]
    NoPrompt { line: usize, fields: &'static str },
    #[error("line {line}: \"{field}\" must be a string")]
    NotText { line: usize, field: &'static str },
    #[error("has no prompts")]
    Empty,
}

/// A prompt file's failure with the file's path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PromptFileError {
    pub path: PathBuf,
    pub source: PromptsError,
}

/// The text of a prompt file.
pub fn read_text(path: &Path) -> Result<String, PromptsError> {
    std::fs::read_to_string(path).map_err(PromptsError::Read)
}

/// The prompts of `text` in file order: one per line, or JSONL (when the first non-blank
/// line starts with `{`) with a non-empty string `instruction` or, failing that, `prompt`;
/// `Err` names the first bad line.
pub fn parse_prompts(text: &str) -> Result<Vec<String>, PromptsError> {
    let mut lines = numbered_lines(text).peekable();
    let jsonl = lines
        .peek()
        .is_some_and(|(_, l)| l.trim_start().starts_with('{'));
    let mut prompts = Vec::new();
    for (line_no, line) in lines {
        if !jsonl {
            prompts.push(line.to_string());
            continue;
        }
        let no_prompt = PromptsError::NoPrompt {
            line: line_no,
            fields: "\"instruction\" or \"prompt\"",
        };
        let row = match parse_row(line_no, line) {
            Ok(row) => row,
            Err(RowError::NotJson(message)) => {
                return Err(PromptsError::NotJson {
                    line: line_no,
                    message,
                })
            }
            Err(RowError::NotObject) => return Err(no_prompt),
        };
        // The first string of the two decides (a blank instruction is not passed over).
        let field = row
            .instruction
            .text()
            .or(row.prompt.text())
            .filter(|s| !s.trim().is_empty());
        match field {
            Some(p) => prompts.push(p.to_string()),
            None => return Err(no_prompt),
        }
    }
    if prompts.is_empty() {
        return Err(PromptsError::Empty);
    }
    Ok(prompts)
}

/// A `--prompts`-style file read with [`parse_prompts`].
pub fn read_prompts(path: &Path) -> Result<Vec<String>, PromptFileError> {
    read_text(path)
        .and_then(|text| parse_prompts(&text))
        .map_err(|source| PromptFileError {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_skip_blank_ones() {
        let got = parse_prompts("Why is the sky blue?\r\n\n  \nWrite a haiku.\n").unwrap();
        assert_eq!(got, vec!["Why is the sky blue?", "Write a haiku."]);
    }

    #[test]
    fn jsonl_takes_instruction_then_prompt() {
        let text = "{\"instruction\": \"a\", \"prompt\": \"ignored\"}\n\n{\"prompt\": \"b\", \"chosen\": \"x\"}\n";
        assert_eq!(parse_prompts(text).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn bad_rows_are_named_by_line() {
        let e = parse_prompts("{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 3 has no non-empty string \"instruction\" or \"prompt\""
        );
        let e = parse_prompts("{\"prompt\": \"a\"}\n{oops\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2 is not valid JSON"), "{e}");
        let e = parse_prompts("{\"instruction\": \"  \"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1 has no"), "{e}");
        assert_eq!(
            parse_prompts("\n \n").unwrap_err().to_string(),
            "has no prompts"
        );
    }

    #[test]
    fn the_alpaca_eval_pairs_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/alpaca_eval/pairs.jsonl");
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let prompts = parse_prompts(&text).unwrap();
        assert_eq!(
            prompts.len(),
            text.lines().filter(|l| !l.trim().is_empty()).count()
        );
    }
}
