//! Diagnostics: what went wrong, where, and what to do — rendered rustc-style with a fixed
//! layout and no colour, so golden tests and CI logs read the same as a terminal.

pub mod codes;

use crate::ast::Span;
pub use codes::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A span with a short explanation printed under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// What is wrong: lower-case, no trailing period, identifiers in backticks.
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error; its severity comes from the code's letter.
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            primary: Label {
                span,
                text: label.into(),
            },
            secondary: Vec::new(),
            help: None,
        }
    }

    /// Adds a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line when there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Points at a second place that explains the first.
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// 1-based line and column (in characters) of the primary span, for tools that want
    /// positions rather than rendered text (CI annotations, editors).
    pub fn line_col(&self, source: &str) -> (u32, u32) {
        Lines::new(source).line_col(self.primary.span.start)
    }
}

/// Every diagnostic of one run, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// Renders them all, see [`render`].
    pub fn render(&self, path: &str, source: &str) -> String {
        render(path, source, &self.0)
    }
}

/// Sorts diagnostics by position, errors first at equal positions, so output is stable.
pub(crate) fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (a.primary.span.start, a.severity, a.code.id()).cmp(&(
            b.primary.span.start,
            b.severity,
            b.code.id(),
        ))
    });
}

/// Line starts of a source, to turn byte offsets into 1-based line and column.
pub(crate) struct Lines<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(source: &'a str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Lines { source, starts }
    }

    /// 0-based line index of a byte offset.
    fn index(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: u32) -> (u32, u32) {
        let offset = clamp_to_char(self.source, offset as usize);
        let line = self.index(offset);
        let start = self.starts.get(line).copied().unwrap_or(0);
        let col = self
            .source
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (to_u32(line + 1), to_u32(col + 1))
    }

    /// The text of a 0-based line, without its newline.
    fn text(&self, line: usize) -> &'a str {
        let start = self.starts.get(line).copied().unwrap_or(self.source.len());
        let end = self
            .starts
            .get(line + 1)
            .map_or(self.source.len(), |e| e.saturating_sub(1));
        let text = self.source.get(start..end.max(start)).unwrap_or("");
        text.strip_suffix('\r').unwrap_or(text)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn clamp_to_char(source: &str, mut offset: usize) -> usize {
    offset = offset.min(source.len());
    while offset > 0 && !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Renders diagnostics rustc-style, separated by blank lines:
///
/// ```text
/// error[E0103]: unknown detector `credit_crd`
///  --> policies/x.policy:9:31
///   |
/// 9 |   when prompt has pii(email, credit_crd)
///   |                              ^^^^^^^^^^ not a built-in or declared detector
///   |
///   = help: did you mean `credit_card`?
/// ```
pub fn render(path: &str, source: &str, diags: &[Diagnostic]) -> String {
    let lines = Lines::new(source);
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, path, &lines, d);
    }
    out
}

fn render_one(out: &mut String, path: &str, lines: &Lines<'_>, d: &Diagnostic) {
    let kind = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    out.push_str(&format!("{kind}[{}]: {}\n", d.code.id(), d.message));
    let (line, col) = lines.line_col(d.primary.span.start);
    // Labels in source order; the primary one is drawn with `^`, the others with `-`.
    let mut labels: Vec<(&Label, bool)> = vec![(&d.primary, true)];
    labels.extend(d.secondary.iter().map(|l| (l, false)));
    labels.sort_by_key(|(l, primary)| (l.span.start, !*primary));
    let max_line = labels
        .iter()
        .map(|(l, _)| lines.line_col(l.span.start).0)
        .max()
        .unwrap_or(line);
    let width = max_line.to_string().len();
    let pad = " ".repeat(width);
    out.push_str(&format!("{pad}--> {path}:{line}:{col}\n"));
    out.push_str(&format!("{pad} |\n"));
    let mut last_line: Option<u32> = None;
    for (label, primary) in labels {
        let (l, c) = lines.line_col(label.span.start);
        let idx = (l as usize).saturating_sub(1);
        let text = lines.text(idx).replace('\t', " ");
        if let Some(prev) = last_line
            && l > prev + 1
        {
            out.push_str(&format!("{pad} :\n"));
        }
        if last_line != Some(l) {
            out.push_str(&format!("{l:>width$} | {}\n", text.trim_end()));
        }
        last_line = Some(l);
        // Underline to the span's end, or the end of the line for multi-line spans.
        let (end_line, end_col) = lines.line_col(label.span.end);
        let line_chars = to_u32(text.chars().count());
        let end_col = if end_line == l {
            end_col
        } else {
            line_chars + 1
        };
        let len = end_col.saturating_sub(c).max(1) as usize;
        let mark = if primary { "^" } else { "-" };
        let underline = format!(
            "{}{} {}",
            " ".repeat((c as usize).saturating_sub(1)),
            mark.repeat(len),
            label.text
        );
        out.push_str(&format!("{pad} | {}\n", underline.trim_end()));
    }
    if let Some(help) = &d.help {
        out.push_str(&format!("{pad} |\n"));
        out.push_str(&format!("{pad} = help: {help}\n"));
    }
}
