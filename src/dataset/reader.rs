//! Reading dataset rows as JSON values, one at a time: JSONL (blank lines are not rows),
//! a JSON array, or Parquet (through the `parquet` crate's record API).
//!
//! A row that cannot be read (a JSONL line that is not valid UTF-8 or not JSON) is an error
//! of that row, not of the file; a file that cannot be opened or a Parquet file that cannot
//! be decoded fails the run.

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
    /// metadata; a streaming pass over JSONL lines, which are counted, not decoded).
    pub fn count(path: &Path) -> Result<usize, DatasetError> {
        match format_of(path) {
            Format::Jsonl => {
                let io = |source| DatasetError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                let mut n = 0;
                for (_, line) in byte_lines(BufReader::new(File::open(path).map_err(io)?)) {
                    if !is_blank(&line.map_err(io)?) {
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

/// Lines of a JSONL file as bytes with their 1-based numbers, without the line end (`\n` or
/// `\r\n`): decoding is each line's own business, so a bad byte fails its row, not the file.
fn byte_lines(reader: impl BufRead) -> impl Iterator<Item = (usize, std::io::Result<Vec<u8>>)> {
    reader.split(b'\n').enumerate().map(|(i, line)| {
        let line = line.map(|mut bytes| {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            bytes
        });
        (i + 1, line)
    })
}

/// A line that is not a row: empty or whitespace only.
fn is_blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|text| text.trim().is_empty())
}

/// A JSONL line's value, or why it has none.
fn parse_line(line: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "the line is not valid UTF-8 (invalid byte at column {})",
            e.valid_up_to() + 1
        )
    })?;
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// Non-blank lines of a JSONL file, each decoded and parsed on its own.
fn jsonl_rows(
    path: PathBuf,
    reader: impl BufRead,
) -> impl Iterator<Item = Result<RawRow, DatasetError>> {
    byte_lines(reader).filter_map(move |(line, bytes)| match bytes {
        Err(source) => Some(Err(DatasetError::Io {
            path: path.clone(),
            source,
        })),
        Ok(bytes) if is_blank(&bytes) => None,
        Ok(bytes) => Some(Ok(RawRow {
            line,
            value: parse_line(&bytes),
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

    #[test]
    fn an_invalid_utf8_line_is_a_row_error_with_its_line_number() {
        let text: &[u8] = b"{\"a\":1}\n{\"a\":\"\xff\"}\n\n{\"a\":2}\r\n";
        let rows: Vec<RawRow> = jsonl_rows(PathBuf::from("x"), text)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].line, 2);
        let reason = rows[1].value.as_ref().unwrap_err();
        assert!(reason.contains("not valid UTF-8"), "{reason}");
        assert_eq!(rows[2].line, 4);
        assert_eq!(rows[2].value.as_ref().unwrap()["a"], 2);
    }

    #[test]
    fn count_counts_a_line_with_invalid_utf8_as_a_row() {
        let dir = std::env::temp_dir().join(format!("tpo-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n\xff\xfe\n  \n{\"a\":2}").unwrap();
        assert_eq!(RowReader::count(&path).unwrap(), 3);
    }
}
