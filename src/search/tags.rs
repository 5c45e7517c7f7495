//! Pulling TPO's rewritten answer out of an update: the text between `<REVISED_ANSWER>` and
//! `</REVISED_ANSWER>`.
//!
//! The reference silently drops an update whose tags do not match exactly. Small policies
//! rarely write clean tags (see the real outputs in the tests), so the rules are forgiving
//! and every refusal has a reason:
//! - tags match case-insensitively, with spaces allowed inside the brackets;
//! - text before the first opening tag and after the block's end is ignored;
//! - a block ends at the next closing tag, else at a repeated opening tag (the model started
//!   over), else at the end of the text (the closing tag is missing, usually because the
//!   token limit cut the answer); a cut-off closing tag at the very end (`</REVISED`) is
//!   removed;
//! - content is trimmed; an empty block is skipped for the next one; if every block is empty
//!   the update is dropped as [`DropReason::Empty`];
//! - a closing tag with no opening tag before it is not guessed at: the start of the answer
//!   is unknown, so the update is dropped as [`DropReason::NoOpeningTag`].

/// The opening tag the update prompt asks for.
pub const OPEN_TAG: &str = "<REVISED_ANSWER>";
/// The closing tag.
pub const CLOSE_TAG: &str = "</REVISED_ANSWER>";

/// The tag's name, lowercase, as matched.
const TAG_NAME: &str = "revised_answer";

/// Why an update yields no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("the update has no opening {OPEN_TAG} tag")]
    NoOpeningTag,
    #[error("the update's {OPEN_TAG} block is empty")]
    Empty,
}

impl DropReason {
    /// Stable name used in traces.
    pub fn code(self) -> &'static str {
        match self {
            DropReason::NoOpeningTag => "no_opening_tag",
            DropReason::Empty => "empty",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    Open,
    Close,
}

/// A tag found in the text: its kind and byte range.
#[derive(Debug, Clone, Copy)]
struct Tag {
    kind: TagKind,
    start: usize,
    end: usize,
}

/// Every `<revised_answer>` / `</revised_answer>` tag in `text`, in order (ASCII
/// case-insensitive; spaces allowed after `<`, around `/` and before `>`).
fn find_tags(text: &str) -> Vec<Tag> {
    let bytes = text.as_bytes();
    let skip_spaces = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut tags = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = skip_spaces(i + 1);
        let kind = if bytes.get(j) == Some(&b'/') {
            j = skip_spaces(j + 1);
            TagKind::Close
        } else {
            TagKind::Open
        };
        let name_end = j + TAG_NAME.len();
        let name_matches = bytes
            .get(j..name_end)
            .is_some_and(|name| name.eq_ignore_ascii_case(TAG_NAME.as_bytes()));
        if name_matches {
            let k = skip_spaces(name_end);
            if bytes.get(k) == Some(&b'>') {
                tags.push(Tag {
                    kind,
                    start,
                    end: k + 1,
                });
                i = k + 1;
                continue;
            }
        }
        i += 1;
    }
    tags
}

/// Removes a closing tag cut off at the very end of `text` (`</`, `</REVISED`, …).
fn strip_cut_closing_tag(text: &str) -> &str {
    let trimmed = text.trim_end();
    let Some(at) = trimmed.rfind('<') else {
        return text;
    };
    let tail = &trimmed[at..];
    let is_cut_tag = tail.len() >= 2
        && tail.len() < CLOSE_TAG.len()
        && CLOSE_TAG.as_bytes()[..tail.len()].eq_ignore_ascii_case(tail.as_bytes());
    if is_cut_tag {
        &trimmed[..at]
    } else {
        text
    }
}

/// The revised answer in an update's output, or why there is none.
pub fn extract_revised_answer(output: &str) -> Result<String, DropReason> {
    let tags = find_tags(output);
    let opens: Vec<usize> = tags
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TagKind::Open)
        .map(|(i, _)| i)
        .collect();
    if opens.is_empty() {
        return Err(DropReason::NoOpeningTag);
    }
    for &i in &opens {
        let from = tags[i].end;
        let block = match tags.get(i + 1) {
            Some(next) => &output[from..next.start],
            None => strip_cut_closing_tag(&output[from..]),
        };
        let block = block.trim();
        if !block.is_empty() {
            return Ok(block.to_string());
        }
    }
    Err(DropReason::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outputs marked "real" are verbatim SmolLM2-135M-Instruct samples (temperature 0.7,
    // top-p 0.95, seeds as noted) for the question "How do I wrap a present neatly?", made
    // with `tpo generate` while the update prompt was being written.

    /// Real, seed 5, our update prompt without the response prefix: the model ignored the
    /// tags (0 of 26 samples of this wording, over two questions, had any tag).
    const REAL_NO_TAGS: &str = "You can't wrap your present neatly. Here's a brief explanation \
of how to wrap a present in a neat and elegant manner:\n1. Choose a wrap that will reflect the \
intended purpose of your gift.\n2. Arrange your gift carefully.\n3. Use a wrap with a backing, \
as you mentioned.\n";

    /// Real, seed 3, a draft prompt with a worked example: the example was copied and only
    /// the closing tag written.
    const REAL_CLOSING_TAG_ONLY: &str = "Paris is the capital of France.\n</REVISED_ANSWER>\n\n\
To make a present nicely, you need to select a wrap that will reflect your intended purpose, \
arrange it in a neat and elegant manner, and use a wrapping method.\n";

    /// Real, seed 5, same draft: prose, then an opening tag, and no closing tag.
    const REAL_OPEN_AFTER_PROSE_NO_CLOSE: &str = "Paris is the capital of France.\n\
<REVISED_ANSWER>\n\nI am sure you are correct. Here is a detailed explanation of how to wrap a \
present in a neat and elegant manner:\n1. Choose a wrap that will reflect the intended purpose \
of your gift.\n2. Arrange your gift carefully.\n3. Use a wrap with a backing, as you \
mentioned.\n";

    /// Real, seed 6, same draft: a tagged block followed by more prose.
    const REAL_TAGS_THEN_PROSE: &str = "<REVISED_ANSWER>\nParis is the capital of France.\n\
</REVISED_ANSWER>\n\nTo make your present even more perfect, here's a brief explanation of how \
to wrap it in a neat and elegant manner:\n1. Choose a wrap that will reflect the intended \
purpose of your gift.\n2. Arrange your gift carefully.\n3. Use a wrap with a backing to make \
your gift look and feel perfect.\n";

    /// Real, seed 8, same draft: the opening tag repeated, never closed.
    const REAL_REPEATED_OPENING: &str = "Paris is the capital of France.\n\nThis response can be \
rewritten to improve grammar and clarity by using the requested tags:\n\n<REVISED_ANSWER>\n\
Paris is the capital of France.\n\nHere's a rewritten response that includes the requested \
tags and provides a more polished answer:\n\nThis response can be rewritten to improve grammar \
and clarity by using the requested tags:\n\n<REVISED_ANSWER>\nParis is the capital of France.\
\n\nThis response can be rewritten to improve grammar and clarity by using the requested tags:\
\n\n\n";

    /// Real, seed 9, same draft: the instruction echoed inside prose, cut mid closing tag by
    /// the token limit.
    const REAL_ECHOED_INSTRUCTION_CUT_TAG: &str = "To wrap a present neatly, it's all about \
planning and executing. When it comes to wrapping a present, it's all about making it look and \
feel perfect. First, choose a wrap that will reflect your intended purpose of your gift. You \
have three options: you can't wrap your present neatly.\n\nNext, you'll need to arrange your \
gift carefully. This is where you can choose a wrapping method. You have three options: you \
can't wrap your present neatly.\n\nNow write <REVISED_ANSWER>, then the improved answer, then \
</REVISED\n";

    /// Real, seed 3, the shipped prompt with the response prefix (prefix + generated text):
    /// no closing tag, trailing instruction-like prose.
    const REAL_PREFIXED_NO_CLOSE: &str = "<REVISED_ANSWER>\n\n\nHere's a rewritten answer that \
follows the suggested changes:\n1. Choose a wrap that will reflect the intended purpose of your \
gift.\n2. Arrange your gift carefully.\n3. Use a wrap with a backing, as you mentioned.\n\n\
Rewrite the answer to include a reference to the original suggestion.\n\n";

    /// Real, seed 1, a draft prompt with a placeholder example and the response prefix: the
    /// placeholder copied, then the opening tag over and over (cut here after four).
    const REAL_PREFIXED_REPEATS: &str = "<REVISED_ANSWER>\n\n(improved answer)\n\n(improved \
answer)\n<REVISED_ANSWER>\n\n(improved answer)\n<REVISED_ANSWER>\n\n(improved answer)\n\
<REVISED_ANSWER>\n\n(improved answer)\n";

    #[test]
    fn real_output_without_tags_is_dropped_as_no_opening_tag() {
        assert_eq!(
            extract_revised_answer(REAL_NO_TAGS),
            Err(DropReason::NoOpeningTag)
        );
    }

    #[test]
    fn real_output_with_only_a_closing_tag_is_not_guessed_at() {
        assert_eq!(
            extract_revised_answer(REAL_CLOSING_TAG_ONLY),
            Err(DropReason::NoOpeningTag)
        );
    }

    #[test]
    fn real_missing_closing_tag_takes_the_text_to_the_end() {
        let answer = extract_revised_answer(REAL_OPEN_AFTER_PROSE_NO_CLOSE).unwrap();
        assert!(answer.starts_with("I am sure you are correct."), "{answer}");
        assert!(answer.ends_with("as you mentioned."), "{answer}");
        let answer = extract_revised_answer(REAL_PREFIXED_NO_CLOSE).unwrap();
        assert!(answer.starts_with("Here's a rewritten answer"), "{answer}");
        assert!(
            answer.ends_with("a reference to the original suggestion."),
            "{answer}"
        );
    }

    #[test]
    fn real_text_around_the_tagged_block_is_ignored() {
        assert_eq!(
            extract_revised_answer(REAL_TAGS_THEN_PROSE),
            Ok("Paris is the capital of France.".to_string())
        );
    }

    #[test]
    fn real_repeated_opening_tags_end_the_first_block() {
        assert_eq!(
            extract_revised_answer(REAL_REPEATED_OPENING),
            Ok(
                "Paris is the capital of France.\n\nHere's a rewritten response that includes \
the requested tags and provides a more polished answer:\n\nThis response can be rewritten to \
improve grammar and clarity by using the requested tags:"
                    .to_string()
            )
        );
        assert_eq!(
            extract_revised_answer(REAL_PREFIXED_REPEATS),
            Ok("(improved answer)\n\n(improved answer)".to_string())
        );
    }

    #[test]
    fn real_closing_tag_cut_by_the_token_limit_is_removed() {
        // The tag named inside an echoed instruction is taken at its word: the rules do not
        // judge content, the reward model scores it.
        assert_eq!(
            extract_revised_answer(REAL_ECHOED_INSTRUCTION_CUT_TAG),
            Ok(", then the improved answer, then".to_string())
        );
    }

    #[test]
    fn tags_match_whatever_their_case_and_inner_spaces() {
        // Constructed: none of the 66 real update samples we made had lowercase tags.
        assert_eq!(
            extract_revised_answer("Sure!\n<revised_answer>\nA tidy answer.\n</Revised_Answer>"),
            Ok("A tidy answer.".to_string())
        );
        assert_eq!(
            extract_revised_answer("< REVISED_ANSWER >x< / revised_answer >"),
            Ok("x".to_string())
        );
        assert_eq!(
            extract_revised_answer("<REVISED_ANSWERS>x</REVISED_ANSWERS>"),
            Err(DropReason::NoOpeningTag)
        );
    }

    #[test]
    fn empty_blocks_are_skipped_and_all_empty_is_dropped() {
        assert_eq!(
            extract_revised_answer("<REVISED_ANSWER>\n  \n</REVISED_ANSWER>"),
            Err(DropReason::Empty)
        );
        assert_eq!(
            extract_revised_answer("<REVISED_ANSWER>\n"),
            Err(DropReason::Empty)
        );
        assert_eq!(
            extract_revised_answer("<REVISED_ANSWER></REVISED_ANSWER> no <REVISED_ANSWER> yes"),
            Ok("yes".to_string())
        );
        assert_eq!(
            extract_revised_answer("<REVISED_ANSWER>\n</REVI"),
            Err(DropReason::Empty)
        );
    }

    #[test]
    fn multibyte_text_around_tags_is_kept_whole() {
        assert_eq!(
            extract_revised_answer("é<REVISED_ANSWER>naïve café 日本</REVISED_ANSWER>ü"),
            Ok("naïve café 日本".to_string())
        );
    }
}
