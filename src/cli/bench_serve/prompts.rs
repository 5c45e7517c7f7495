//! The prompts of a run: a text file with one prompt a line, or JSONL whose objects have an
//! `instruction` or `prompt` string (AlpacaEval's files, our `data/alpaca_eval/pairs.jsonl`).
//! The format is the first non-empty line's: JSONL when it starts with `{`.

use serde_json::Value;

/// The prompts of `text`, in file order; `Err` names the first bad line.
pub fn parse_prompts(text: &str) -> Result<Vec<String>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let jsonl = lines
        .peek()
        .is_some_and(|(_, l)| l.trim_start().starts_with('{'));
    let mut prompts = Vec::new();
    for (line_no, line) in lines {
        if !jsonl {
            prompts.push(line.to_string());
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("line {line_no} is not valid JSON: {e}"))?;
        let field = ["instruction", "prompt"]
            .iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str))
            .filter(|s| !s.trim().is_empty());
        match field {
            Some(p) => prompts.push(p.to_string()),
            None => {
                return Err(format!(
                    "line {line_no} has no non-empty string \"instruction\" or \"prompt\""
                ))
            }
        }
    }
    if prompts.is_empty() {
        return Err("has no prompts".into());
    }
    Ok(prompts)
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
        let e = parse_prompts("{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n").unwrap_err();
        assert_eq!(
            e,
            "line 3 has no non-empty string \"instruction\" or \"prompt\""
        );
        let e = parse_prompts("{\"prompt\": \"a\"}\n{oops\n").unwrap_err();
        assert!(e.starts_with("line 2 is not valid JSON"), "{e}");
        let e = parse_prompts("{\"instruction\": \"  \"}\n").unwrap_err();
        assert!(e.starts_with("line 1 has no"), "{e}");
        assert_eq!(parse_prompts("\n \n").unwrap_err(), "has no prompts");
    }

    #[test]
    fn the_alpaca_eval_pairs_parse() {
        let path = tpo_engine::paths::project_path("data/alpaca_eval/pairs.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let prompts = parse_prompts(&text).unwrap();
        assert_eq!(
            prompts.len(),
            text.lines().filter(|l| !l.trim().is_empty()).count()
        );
    }
}
