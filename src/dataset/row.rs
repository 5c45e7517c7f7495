//! One dataset row in the shapes Hugging Face preference datasets use, turned into what a
//! reward model scores.
//!
//! Accepted shapes (column names configurable):
//! - `prompt` / `chosen` / `rejected` as strings (a pair);
//! - `chosen` / `rejected` as chat-message lists (`[{role, content}, ...]`), whole
//!   conversations whose last assistant message is the response; without a `prompt`
//!   column the prompt is the last user message before it;
//! - `prompt` / `response` (a single response);
//! - an optional `reference` answer (string or messages) for similarity rewards;
//! - an optional `id` (string or number); otherwise the row's line number is its id.
//!
//! A prompt given as messages is reduced to its last user message: the reward models take
//! one question and one answer.

use serde_json::Value;

/// Column names, overridable from the command line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Columns {
    pub id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub response: String,
    pub reference: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
            response: "response".into(),
            reference: "reference".into(),
        }
    }
}

/// What a row asks to score.
#[derive(Debug, Clone, PartialEq)]
pub enum Responses {
    Pair { chosen: String, rejected: String },
    Single { response: String },
}

impl Responses {
    /// The texts to score, in order: chosen then rejected, or the single response.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Responses::Pair { chosen, rejected } => vec![chosen, rejected],
            Responses::Single { response } => vec![response],
        }
    }
}

/// A parsed row.
#[derive(Debug, Clone, PartialEq)]
pub struct DataRow {
    /// The row's `id`, or its line number.
    pub id: Value,
    pub line: usize,
    pub prompt: String,
    pub responses: Responses,
    pub reference: Option<String>,
}

/// A text column: a plain string or a conversation.
enum Text {
    Plain(String),
    Messages(Vec<(String, String)>),
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn text_field(row: &Value, name: &str) -> Result<Option<Text>, String> {
    match row.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Text::Plain(s.clone()))),
        Some(Value::Array(items)) => {
            let mut messages = Vec::with_capacity(items.len());
            for (i, m) in items.iter().enumerate() {
                let field = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_owned);
                match (field("role"), field("content")) {
                    (Some(role), Some(content)) => messages.push((role, content)),
                    _ => {
                        return Err(format!(
                            "field `{name}`[{i}] must be a message {{\"role\": string, \
                             \"content\": string}}"
                        ))
                    }
                }
            }
            Ok(Some(Text::Messages(messages)))
        }
        Some(other) => Err(format!(
            "field `{name}` must be a string or a list of chat messages, found {}",
            type_name(other)
        )),
    }
}

fn last_with_role<'a>(messages: &'a [(String, String)], role: &str) -> Option<&'a str> {
    messages
        .iter()
        .rev()
        .find(|(r, _)| r == role)
        .map(|(_, c)| c.as_str())
}

/// A response column: the text, or the conversation's last assistant message (with the
/// last user message before it, a prompt candidate).
fn response_of(text: Text, name: &str) -> Result<(String, Option<String>), String> {
    match text {
        Text::Plain(s) => Ok((s, None)),
        Text::Messages(m) => {
            let at = m
                .iter()
                .rposition(|(role, _)| role == "assistant")
                .ok_or_else(|| format!("field `{name}` has no assistant message"))?;
            let prompt = last_with_role(&m[..at], "user").map(str::to_owned);
            Ok((m[at].1.clone(), prompt))
        }
    }
}

fn plain_text(text: Text, name: &str) -> Result<String, String> {
    match text {
        Text::Plain(s) => Ok(s),
        Text::Messages(m) => last_with_role(&m, "user")
            .or_else(|| last_with_role(&m, "assistant"))
            .map(str::to_owned)
            .ok_or_else(|| format!("field `{name}` has no user or assistant message")),
    }
}

impl DataRow {
    /// Parses `value` (the row at `line`); the error names the field and the problem.
    pub fn parse(value: &Value, line: usize, columns: &Columns) -> Result<Self, String> {
        if !value.is_object() {
            return Err(format!(
                "a row must be a JSON object, found {}",
                type_name(value)
            ));
        }
        let id = match value.get(&columns.id) {
            None | Some(Value::Null) => Value::from(line),
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            Some(other) => {
                return Err(format!(
                    "field `{}` must be a string or a number, found {}",
                    columns.id,
                    type_name(other)
                ))
            }
        };
        let chosen = text_field(value, &columns.chosen)?;
        let rejected = text_field(value, &columns.rejected)?;
        let (responses, prompt_from_conversation) = match (chosen, rejected) {
            (Some(c), Some(r)) => {
                let (chosen, prompt_c) = response_of(c, &columns.chosen)?;
                let (rejected, _) = response_of(r, &columns.rejected)?;
                (Responses::Pair { chosen, rejected }, prompt_c)
            }
            (Some(_), None) | (None, Some(_)) => {
                let missing = if value.get(&columns.chosen).is_some() {
                    &columns.rejected
                } else {
                    &columns.chosen
                };
                return Err(format!("field `{missing}` is missing"));
            }
            (None, None) => match text_field(value, &columns.response)? {
                Some(t) => {
                    let (response, prompt) = response_of(t, &columns.response)?;
                    (Responses::Single { response }, prompt)
                }
                None => {
                    return Err(format!(
                        "the row has neither `{}`/`{}` nor `{}`",
                        columns.chosen, columns.rejected, columns.response
                    ))
                }
            },
        };
        let prompt = match text_field(value, &columns.prompt)? {
            Some(t) => plain_text(t, &columns.prompt)?,
            None => prompt_from_conversation
                .ok_or_else(|| format!("field `{}` is missing", columns.prompt))?,
        };
        let reference = text_field(value, &columns.reference)?
            .map(|t| match t {
                Text::Plain(s) => Ok(s),
                Text::Messages(m) => {
                    response_of(Text::Messages(m), &columns.reference).map(|r| r.0)
                }
            })
            .transpose()?;
        Ok(Self {
            id,
            line,
            prompt,
            responses,
            reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DataRow, String> {
        DataRow::parse(&v, 7, &Columns::default())
    }

    /// The pair both pair-shaped rows below parse to.
    fn chosen_c_rejected_r() -> Responses {
        Responses::Pair {
            chosen: "c".into(),
            rejected: "r".into(),
        }
    }

    #[test]
    fn string_pairs() {
        let r = parse(json!({"id": "a", "prompt": "q", "chosen": "c", "rejected": "r"})).unwrap();
        assert_eq!(r.id, json!("a"));
        assert_eq!(r.prompt, "q");
        assert_eq!(r.responses, chosen_c_rejected_r());
    }

    #[test]
    fn whole_conversations_give_prompt_and_responses() {
        let conv = |a: &str| json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]);
        let r = parse(json!({"chosen": conv("c"), "rejected": conv("r")})).unwrap();
        assert_eq!(r.prompt, "q");
        assert_eq!(r.id, json!(7));
        assert_eq!(r.responses, chosen_c_rejected_r());
    }

    #[test]
    fn single_responses_and_references() {
        let r = parse(json!({"prompt": [{"role": "user", "content": "q"}], "response": "a", "reference": "ref"}))
            .unwrap();
        assert_eq!(r.prompt, "q");
        assert_eq!(
            r.responses,
            Responses::Single {
                response: "a".into()
            }
        );
        assert_eq!(r.reference.as_deref(), Some("ref"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(json!({"prompt": "q", "chosen": "c"})).unwrap_err();
        assert!(e.contains("`rejected` is missing"), "{e}");
        let e = parse(json!({"prompt": "q", "chosen": 3, "rejected": "r"})).unwrap_err();
        assert!(e.contains("`chosen` must be a string"), "{e}");
        let e = parse(json!({"chosen": "c", "rejected": "r"})).unwrap_err();
        assert!(e.contains("`prompt` is missing"), "{e}");
        let e = parse(json!({"prompt": "q"})).unwrap_err();
        assert!(e.contains("neither"), "{e}");
        let e = parse(json!([1])).unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let e = parse(json!({"id": [1], "prompt": "q", "response": "a"})).unwrap_err();
        assert!(e.contains("`id`"), "{e}");
    }
}
