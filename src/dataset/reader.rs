//! Reading dataset rows as JSON values, one at a time: JSONL (blank lines are not rows),
//! a JSON array, or Parquet (through the `parquet` crate's record API).
//!
//! A row that cannot be read (bad JSON on its line) is an error of that row, not of the
//! file; a file that cannot be opened or a Parquet file that cannot be decoded fails the run.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use super::DatasetError;

/// One raw row: its 1-based line number (JSONL) or 1-based row number (JSON array,
/// Parquet), and its value or why it could not be read.
#[derive(Debug)]
pub struct RawRow {
    pub line: usize,
    pub value: Result<Value, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    JsonArray,
    Parquet,
}

fn format_of(path: &Path) -> Format {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("parquet") => Format::Parquet,
        Some("json") => Format::JsonArray,
        _ => Format::Jsonl,
    }
}

/// Rows of the dataset at `path`, in file order.
pub struct RowReader {
    inner: Box<dyn Iterator<Item = Result<RawRow, DatasetError>>>,
}

impl RowReader {
    pub fn open(path: &Path) -> Result<Self, DatasetError> {
        let io = |source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let inner: Box<dyn Iterator<Item = Result<RawRow, DatasetError>>> = match format_of(path) {
            Format::Jsonl => Box::new(jsonl_rows(path.to_path_buf(), BufReader::new(file))),
            Format::JsonArray => {
                let value: Value = serde_json::from_reader(BufReader::new(file)).map_err(|e| {
                    DatasetError::BadFile {
                        path: path.to_path_buf(),
                        reason: format!("not a JSON array of rows: {e}"),
                    }
                })?;
                let Value::Array(rows) = value else {
                    return Err(DatasetError::BadFile {
                        path: path.to_path_buf(),
                        reason: "a .json dataset must be an array of row objects (use .jsonl \
                                 for one object per line)"
                            .into(),
                    });
                };
                Box::new(rows.into_iter().enumerate().map(|(i, value)| {
                    Ok(RawRow {
                        line: i + 1,
                        value: Ok(value),
                    })
                }))
            }
            Format::Parquet => {
                let reader = SerializedFileReader::new(file).map_err(|e| parquet_err(path, e))?;
                let owned = path.to_path_buf();
                Box::new(reader.into_iter().enumerate().map(move |(i, row)| {
                    let row = row.map_err(|e| parquet_err(&owned, e))?;
                    Ok(RawRow {
                        line: i + 1,
                        value: Ok(row.to_json_value()),
                    })
                }))
            }
        };
        Ok(Self { inner })
    }

    /// Number of rows, without decoding them where the format allows it (Parquet's
    /// metadata; a streaming pass over JSONL lines, which are counted, not parsed).
    pub fn count(path: &Path) -> Result<usize, DatasetError> {
        match format_of(path) {
            Format::Jsonl => {
                let io = |source| DatasetError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                let mut n = 0;
                for line in BufReader::new(File::open(path).map_err(io)?).lines() {
                    if !line.map_err(io)?.trim().is_empty() {
                        n += 1;
                    }
                }
                Ok(n)
            }
            Format::Parquet => {
                let file = File::open(path).map_err(|source| DatasetError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let reader = SerializedFileReader::new(file).map_err(|e| parquet_err(path, e))?;
                Ok(reader.metadata().file_metadata().num_rows().max(0) as usize)
            }
            _ => {
                let mut n = 0;
                for row in Self::open(path)? {
                    row?;
                    n += 1;
                }
                Ok(n)
            }
        }
    }
}

impl Iterator for RowReader {
    type Item = Result<RawRow, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> DatasetError {
    DatasetError::BadFile {
        path: path.to_path_buf(),
        reason: format!("reading Parquet: {e}"),
    }
}

/// Non-blank lines of a JSONL file, each parsed on its own.
fn jsonl_rows(
    path: PathBuf,
    reader: impl BufRead,
) -> impl Iterator<Item = Result<RawRow, DatasetError>> {
    reader
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| match line {
            Err(source) => Some(Err(DatasetError::Io {
                path: path.clone(),
                source,
            })),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(Ok(RawRow {
                line: i + 1,
                value: serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}")),
            })),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_skips_blank_lines_and_keeps_bad_rows_as_row_errors() {
        let text = "{\"a\":1}\n\n{bad\n  \n{\"a\":2}\n";
        let rows: Vec<RawRow> = jsonl_rows(PathBuf::from("x"), text.as_bytes())
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 1);
        assert!(rows[1].value.is_err());
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[2].line, 5);
        assert_eq!(rows[2].value.as_ref().unwrap()["a"], 2);
    }
}
