//! The lexical pre-pass: comments, strings, bracket balance, nesting depth, and the split
//! into top-level items. It is a flat loop over bytes, so it cannot overflow the stack on
//! any input, and it lets pest see only input whose nesting is bounded.

use super::MAX_DEPTH;
use crate::ast::{Comment, Span};
use crate::diag::{Diagnostic, codes};

pub(super) struct Lexed {
    pub comments: Vec<Comment>,
    pub diags: Vec<Diagnostic>,
    /// Byte ranges of the top-level items, in order.
    pub segments: Vec<(usize, usize)>,
}

/// Words that start a top-level item when they begin a line outside any block.
const ITEM_KEYWORDS: &[&str] = &[
    "policy",
    "workflow",
    "price",
    "detector",
    "rule",
    "manual",
    "kill_switch",
];

fn word_at(bytes: &[u8], i: usize) -> &[u8] {
    let end = bytes
        .get(i..)
        .and_then(|rest| {
            rest.iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        })
        .map_or(bytes.len(), |n| i + n);
    bytes.get(i..end).unwrap_or(&[])
}

pub(super) fn scan(source: &str) -> Lexed {
    let bytes = source.as_bytes();
    let mut comments = Vec::new();
    let mut diags = Vec::new();
    let mut boundaries = Vec::new();
    // Open brackets: (byte, offset).
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut nesting = 0usize;
    let mut line_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b'\n');
        match b {
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if line_start
            && stack.is_empty()
            && ITEM_KEYWORDS
                .iter()
                .any(|k| k.as_bytes() == word_at(bytes, i))
        {
            boundaries.push(i);
        }
        line_start = false;
        match b {
            b'#' => {
                let end = bytes
                    .get(i..)
                    .and_then(|r| r.iter().position(|c| *c == b'\n'))
                    .map_or(bytes.len(), |n| i + n);
                let text = source.get(i..end).unwrap_or("").trim_end().to_string();
                comments.push(Comment {
                    span: Span::new(i, i + text.len()),
                    text,
                });
                i = end;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => {
                            diags.push(
                                Diagnostic::new(
                                    codes::UNCLOSED_STRING,
                                    "unclosed string",
                                    Span::new(start, start + 1),
                                    "this string has no closing `\"`",
                                )
                                .help("strings end on the line they start; add the closing `\"`"),
                            );
                            break;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        // `\"` and `\\` are escapes; any other backslash is kept as
                        // written, so regex patterns such as `hvs\.[0-9]` read naturally.
                        Some(b'\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            b'{' | b'(' | b'[' => {
                stack.push((b, i));
                if b != b'{' {
                    nesting += 1;
                    if nesting > MAX_DEPTH {
                        diags.push(
                            Diagnostic::new(
                                codes::NESTING_TOO_DEEP,
                                format!("brackets nested more than {MAX_DEPTH} levels deep"),
                                Span::new(i, i + 1),
                                "nested too deeply",
                            )
                            .help("simplify the condition"),
                        );
                        // Nothing after this point can be parsed safely.
                        return Lexed {
                            comments,
                            diags,
                            segments: Vec::new(),
                        };
                    }
                }
                i += 1;
            }
            b'}' | b')' | b']' => {
                let open = match b {
                    b'}' => b'{',
                    b')' => b'(',
                    _ => b'[',
                };
                if stack.iter().any(|(o, _)| *o == open) {
                    while let Some((o, at)) = stack.pop() {
                        if o != b'{' {
                            nesting = nesting.saturating_sub(1);
                        }
                        if o == open {
                            break;
                        }
                        diags.push(unclosed(o, at));
                    }
                } else {
                    diags.push(Diagnostic::new(
                        codes::UNMATCHED_CLOSE,
                        format!("unmatched `{}`", b as char),
                        Span::new(i, i + 1),
                        "no opening partner",
                    ));
                }
                i += 1;
            }
            _ => {
                // Skip one whole character.
                i += source
                    .get(i..)
                    .and_then(|r| r.chars().next())
                    .map_or(1, char::len_utf8);
            }
        }
    }
    for (o, at) in stack {
        diags.push(unclosed(o, at));
    }
    let mut segments = Vec::new();
    if boundaries.first() != Some(&0) {
        // Text before the first item: comments and whitespace are fine, anything else is
        // parsed (and reported) as a malformed item.
        let first = boundaries.first().copied().unwrap_or(bytes.len());
        let head = source.get(..first).unwrap_or("");
        let only_comments = head
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if !only_comments {
            segments.push((0, first));
        }
    }
    for (n, start) in boundaries.iter().enumerate() {
        let end = boundaries.get(n + 1).copied().unwrap_or(bytes.len());
        segments.push((*start, end));
    }
    Lexed {
        comments,
        diags,
        segments,
    }
}

fn unclosed(open: u8, at: usize) -> Diagnostic {
    let what = match open {
        b'{' => "block",
        b'(' => "parenthesis",
        _ => "list",
    };
    Diagnostic::new(
        codes::UNCLOSED_BLOCK,
        format!("unclosed {what}"),
        Span::new(at, at + 1),
        format!("this `{}` is never closed", open as char),
    )
    .help(format!(
        "add the matching `{}`",
        match open {
            b'{' => '}',
            b'(' => ')',
            _ => ']',
        }
    ))
}

/// The token starting at (or after whitespace and comments from) `pos`, described for an
/// "unexpected …" message: its span and a description, or `None` at the end of the file.
pub(super) fn token_at(source: &str, mut pos: usize) -> (usize, usize, Option<String>) {
    let bytes = source.as_bytes();
    loop {
        match bytes.get(pos) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => pos += 1,
            Some(b'#') => {
                while let Some(b) = bytes.get(pos) {
                    if *b == b'\n' {
                        break;
                    }
                    pos += 1;
                }
            }
            _ => break,
        }
    }
    while pos > 0 && !source.is_char_boundary(pos) {
        pos -= 1;
    }
    let Some(first) = source.get(pos..).and_then(|r| r.chars().next()) else {
        return (pos, pos, None);
    };
    if first == '"' {
        let end = source
            .get(pos + 1..)
            .and_then(|r| r.find(['"', '\n']))
            .map_or(source.len(), |n| pos + 2 + n)
            .min(source.len());
        return (pos, end, Some("string".to_string()));
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    if is_word(first) {
        let len: usize = source
            .get(pos..)
            .unwrap_or("")
            .chars()
            .take_while(|c| is_word(*c))
            .map(char::len_utf8)
            .sum();
        let end = pos + len;
        let text = source.get(pos..end).unwrap_or("");
        return (pos, end, Some(format!("`{text}`")));
    }
    let end = pos + first.len_utf8();
    let two = source.get(pos..pos + 2).unwrap_or("");
    if matches!(two, "==" | "!=" | "<=" | ">=") {
        return (pos, pos + 2, Some(format!("`{two}`")));
    }
    (pos, end, Some(format!("`{first}`")))
}
