//! A strict, linear JSON scanner that visits every value without building a DOM, and a
//! splicer that rewrites only the strings a caller replaced.
//!
//! Why not `serde_json::Value`: parsing a 4 KB request into a DOM and re-serialising it
//! costs tens of microseconds and reorders nothing we want reordered; the engine only
//! needs to read strings (with the path that says where they are) and replace a few of
//! them. Here a body is validated once (UTF-8 and the JSON grammar, as strictly as
//! `serde_json`), escapes are decoded only for strings that have them, and a new body is
//! built only when something changed: untouched bytes are copied verbatim, so every other
//! field keeps its exact spelling.
//!
//! Architecture invariant: this module knows JSON syntax only; which strings matter is the
//! caller's business (see [`Path::matches`]).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Deepest nesting of arrays and objects accepted, the same limit `serde_json` applies, so
/// hostile input cannot make the scanner's stack grow without bound.
pub const MAX_DEPTH: usize = 128;

/// Why a body is not acceptable JSON. The filter answers 400 for every variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// The body is not UTF-8; `offset` is the first bad byte.
    Utf8 { offset: usize },
    /// The grammar was violated at byte `offset`.
    Syntax {
        offset: usize,
        expected: &'static str,
    },
    /// Nesting went deeper than [`MAX_DEPTH`] at byte `offset`.
    TooDeep { offset: usize },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Utf8 { offset } => write!(f, "body is not valid UTF-8 at byte {offset}"),
            JsonError::Syntax { offset, expected } => {
                write!(f, "malformed JSON at byte {offset}: expected {expected}")
            }
            JsonError::TooDeep { offset } => write!(
                f,
                "JSON nested deeper than {MAX_DEPTH} levels at byte {offset}"
            ),
        }
    }
}

impl std::error::Error for JsonError {}

/// One step from the root to a value: an object member or an array element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg<'a> {
    /// An object member, by its decoded key.
    Key(Cow<'a, str>),
    /// An array element, by position.
    Index(usize),
}

/// A pattern step for [`Path::matches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pat<'p> {
    /// An object member with exactly this key.
    Key(&'p str),
    /// Any array element.
    AnyIndex,
}

/// Where a value sits: the steps from the root, outermost first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Path<'a> {
    segs: Vec<Seg<'a>>,
}

impl<'a> Path<'a> {
    /// The steps, outermost first.
    pub fn segs(&self) -> &[Seg<'a>] {
        &self.segs
    }

    /// Number of steps (0 for the root value).
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// True for the root value.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// The key of step `i`, if it is an object member.
    pub fn key(&self, i: usize) -> Option<&str> {
        match self.segs.get(i) {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The position of step `i`, if it is an array element.
    pub fn index(&self, i: usize) -> Option<usize> {
        match self.segs.get(i) {
            Some(Seg::Index(n)) => Some(*n),
            _ => None,
        }
    }

    /// The key of the innermost step, if it is an object member.
    pub fn last_key(&self) -> Option<&str> {
        self.len().checked_sub(1).and_then(|i| self.key(i))
    }

    /// True when the path is exactly `pat`, step for step (e.g. `messages[*].content` is
    /// `[Key("messages"), AnyIndex, Key("content")]`).
    pub fn matches(&self, pat: &[Pat<'_>]) -> bool {
        self.segs.len() == pat.len() && self.starts_with(pat)
    }

    /// True when the path begins with `pat`.
    pub fn starts_with(&self, pat: &[Pat<'_>]) -> bool {
        pat.len() <= self.segs.len()
            && self.segs.iter().zip(pat).all(|(s, p)| match (s, p) {
                (Seg::Key(k), Pat::Key(want)) => k == want,
                (Seg::Index(_), Pat::AnyIndex) => true,
                _ => false,
            })
    }
}

/// A scalar value as the scanner meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Leaf<'v> {
    /// A string value (never an object key), decoded.
    Str(&'v str),
    /// A number, as written.
    Number(&'v str),
    Bool(bool),
    Null,
}

/// What [`visit`] reports besides scalars, so callers can note where containers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Object,
    Array,
}

/// Receives the values of a document in order. `span` is the byte range of the value in
/// the body, quotes included for strings.
pub trait Visitor<'a> {
    /// A scalar value at `path`.
    fn leaf(&mut self, path: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>);
    /// An object or array opens at byte `at` (the `{` or `[`). Default: ignored.
    fn open(&mut self, _path: &Path<'a>, _kind: Container, _at: usize) {}
    /// An object key (decoded) of the object at `path`; `span` includes the quotes.
    /// Default: ignored, as keys are usually protocol structure.
    fn key(&mut self, _path: &Path<'a>, _key: &str, _span: Range<usize>) {}
}

impl<'a, F: FnMut(&Path<'a>, Leaf<'_>, Range<usize>)> Visitor<'a> for F {
    fn leaf(&mut self, path: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>) {
        self(path, leaf, span)
    }
}

/// Validates `body` as one JSON value (surrounding whitespace allowed) and reports every
/// scalar with its path, in document order. Linear in the body; no recursion.
pub fn visit<'a>(body: &'a [u8], v: &mut impl Visitor<'a>) -> Result<(), JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::Utf8 {
        offset: e.valid_up_to(),
    })?;
    Scanner {
        s: text,
        b: body,
        i: 0,
        path: Path::default(),
        scratch: String::new(),
    }
    .run(v)
}

/// Rewrites string values: `f` sees each string (decoded) with its path and returns a
/// replacement or `None`. Returns `Ok(None)` when nothing changed, so the caller can keep
/// the original body, else the new body with only the replaced strings re-encoded.
pub fn rewrite_strings(
    body: &[u8],
    mut f: impl FnMut(&Path<'_>, &str) -> Option<String>,
) -> Result<Option<Vec<u8>>, JsonError> {
    rewrite_strings_and_keys(body, |path, s, slot| match slot {
        Slot::Value => f(path, s),
        Slot::Key => None,
    })
}

/// Which kind of string [`rewrite_strings_and_keys`] shows its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A string value; the path leads to it.
    Value,
    /// An object key; the path leads to the object that has it.
    Key,
}

/// [`rewrite_strings`] for object keys too: personal data can be a key
/// (`{"jane@example.com": 1}`) as well as a value.
pub fn rewrite_strings_and_keys(
    body: &[u8],
    mut f: impl FnMut(&Path<'_>, &str, Slot) -> Option<String>,
) -> Result<Option<Vec<u8>>, JsonError> {
    rewrite_strings_and_keys_at(body, |path, s, slot, _| f(path, s, slot))
}

/// [`rewrite_strings_and_keys`], also telling `f` where the string (its opening quote)
/// starts in `body`: the key under which the detection pass (`detection.rs`) keeps what it
/// found in that string.
pub fn rewrite_strings_and_keys_at(
    body: &[u8],
    f: impl FnMut(&Path<'_>, &str, Slot, usize) -> Option<String>,
) -> Result<Option<Vec<u8>>, JsonError> {
    struct Edits<F> {
        f: F,
        edits: Vec<(Range<usize>, String)>,
    }
    impl<'a, F: FnMut(&Path<'_>, &str, Slot, usize) -> Option<String>> Visitor<'a> for Edits<F> {
        fn leaf(&mut self, path: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>) {
            if let Leaf::Str(s) = leaf
                && let Some(new) = (self.f)(path, s, Slot::Value, span.start)
                && new != s
            {
                self.edits.push((span, new));
            }
        }
        fn key(&mut self, path: &Path<'a>, key: &str, span: Range<usize>) {
            if let Some(new) = (self.f)(path, key, Slot::Key, span.start)
                && new != key
            {
                self.edits.push((span, new));
            }
        }
    }
    let mut e = Edits {
        f,
        edits: Vec::new(),
    };
    visit(body, &mut e)?;
    if e.edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice(body, &e.edits)))
}

/// Copies `body`, replacing each range (sorted, non-overlapping, as [`visit`] reports
/// string spans) by the JSON string literal of its text. Ranges out of order or out of
/// bounds are skipped rather than trusted.
pub fn splice<S: AsRef<str>>(body: &[u8], edits: &[(Range<usize>, S)]) -> Vec<u8> {
    splice_tracked(body, edits).0
}

/// [`splice`], also returning where each edit's string literal landed in the output
/// (an empty range for a skipped edit), so a caller can edit the result again.
pub fn splice_tracked<S: AsRef<str>>(
    body: &[u8],
    edits: &[(Range<usize>, S)],
) -> (Vec<u8>, Vec<Range<usize>>) {
    let extra: usize = edits.iter().map(|(_, s)| s.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut at_out = Vec::with_capacity(edits.len());
    let mut at = 0usize;
    for (range, text) in edits {
        let Some(keep) = body.get(at..range.start) else {
            at_out.push(out.len()..out.len());
            continue;
        };
        if range.end < range.start || range.end > body.len() {
            at_out.push(out.len()..out.len());
            continue;
        }
        out.extend_from_slice(keep);
        let start = out.len();
        push_json_string(&mut out, text.as_ref());
        at_out.push(start..out.len());
        at = range.end;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    (out, at_out)
}

/// Appends `s` as a JSON string literal, quotes included. Only `"`, `\` and control
/// characters are escaped; everything else stays raw UTF-8, as `serde_json` writes it.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0usize;
    let mut i = 0usize;
    while let Some(&c) = bytes.get(i) {
        // Skip eight plain bytes at a time: most of a rewritten string needs no escape.
        if let Some(w) = bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !needs_attention(u64::from_le_bytes(w))
        {
            i += 8;
            continue;
        }
        i += 1;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(run..i - 1).unwrap_or_default());
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i;
    }
    out.extend_from_slice(bytes.get(run..).unwrap_or_default());
    out.push(b'"');
}

/// True when any byte of `w` is `"`, `\\` or a control character (below 0x20), with
/// the usual SWAR zero-byte test; false positives are impossible for the first such byte
/// and harmless after it (the caller then goes byte by byte).
fn needs_attention(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | backslash | control != 0
}

/// The scanner's position in the document: which container it is in and what comes next.
enum Frame {
    /// In an object; `first` until the first member is read.
    Object { first: bool },
    /// In an array; `next` is the index of the next element.
    Array { next: usize },
}

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    path: Path<'a>,
    /// Reused buffer for strings with escapes.
    scratch: String,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn err(&self, expected: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.i,
            expected,
        }
    }

    fn run(mut self, v: &mut impl Visitor<'a>) -> Result<(), JsonError> {
        let mut stack: Vec<Frame> = Vec::new();
        self.ws();
        // `want_value` is true when the next token must be a value.
        let mut want_value = true;
        loop {
            if want_value {
                self.ws();
                let start = self.i;
                match self.peek() {
                    Some(b'{') => {
                        if stack.len() >= MAX_DEPTH {
                            return Err(JsonError::TooDeep { offset: start });
                        }
                        v.open(&self.path, Container::Object, start);
                        self.i += 1;
                        stack.push(Frame::Object { first: true });
                        want_value = false;
                        continue;
                    }
                    Some(b'[') => {
                        if stack.len() >= MAX_DEPTH {
                            return Err(JsonError::TooDeep { offset: start });
                        }
                        v.open(&self.path, Container::Array, start);
                        self.i += 1;
                        self.ws();
                        if self.peek() == Some(b']') {
                            self.i += 1;
                        } else {
                            stack.push(Frame::Array { next: 1 });
                            self.path.segs.push(Seg::Index(0));
                            continue;
                        }
                    }
                    Some(b'"') => {
                        let (has_escape, end) = self.string_end()?;
                        if has_escape {
                            let mut buf = std::mem::take(&mut self.scratch);
                            buf.clear();
                            self.decode(start + 1, end - 1, &mut buf)?;
                            v.leaf(&self.path, Leaf::Str(&buf), start..end);
                            self.scratch = buf;
                        } else {
                            let raw = self.s.get(start + 1..end - 1).unwrap_or_default();
                            v.leaf(&self.path, Leaf::Str(raw), start..end);
                        }
                        self.i = end;
                    }
                    Some(b't') => self.literal(b"true", Leaf::Bool(true), v)?,
                    Some(b'f') => self.literal(b"false", Leaf::Bool(false), v)?,
                    Some(b'n') => self.literal(b"null", Leaf::Null, v)?,
                    Some(b'-' | b'0'..=b'9') => {
                        self.number()?;
                        let raw = self.s.get(start..self.i).unwrap_or_default();
                        v.leaf(&self.path, Leaf::Number(raw), start..self.i);
                    }
                    _ => return Err(self.err("a value")),
                }
            }
            // A value just ended (or a container just opened, for objects): decide what
            // comes next from the innermost container.
            self.ws();
            match stack.last_mut() {
                None => {
                    return if self.i == self.b.len() {
                        Ok(())
                    } else {
                        Err(self.err("end of input"))
                    };
                }
                Some(Frame::Array { next }) => match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if let Some(Seg::Index(n)) = self.path.segs.last_mut() {
                            *n = *next;
                        }
                        *next += 1;
                        want_value = true;
                    }
                    Some(b']') => {
                        self.i += 1;
                        stack.pop();
                        self.path.segs.pop();
                        want_value = false;
                    }
                    _ => return Err(self.err("`,` or `]`")),
                },
                Some(Frame::Object { first }) => {
                    if *first {
                        *first = false;
                        if self.peek() == Some(b'}') {
                            self.i += 1;
                            stack.pop();
                            want_value = false;
                            continue;
                        }
                    } else {
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.ws();
                                self.path.segs.pop();
                            }
                            Some(b'}') => {
                                self.i += 1;
                                stack.pop();
                                self.path.segs.pop();
                                want_value = false;
                                continue;
                            }
                            _ => return Err(self.err("`,` or `}`")),
                        }
                    }
                    // A member: key, colon, then the value.
                    if self.peek() != Some(b'"') {
                        return Err(self.err("an object key"));
                    }
                    let start = self.i;
                    let (has_escape, end) = self.string_end()?;
                    let key: Cow<'a, str> = if has_escape {
                        let mut buf = String::new();
                        self.decode(start + 1, end - 1, &mut buf)?;
                        Cow::Owned(buf)
                    } else {
                        Cow::Borrowed(self.s.get(start + 1..end - 1).unwrap_or_default())
                    };
                    v.key(&self.path, &key, start..end);
                    self.i = end;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("`:`"));
                    }
                    self.i += 1;
                    self.path.segs.push(Seg::Key(key));
                    want_value = true;
                }
            }
        }
    }

    fn literal(
        &mut self,
        word: &'static [u8],
        leaf: Leaf<'_>,
        v: &mut impl Visitor<'a>,
    ) -> Result<(), JsonError> {
        let start = self.i;
        if self.b.get(start..start + word.len()) != Some(word) {
            return Err(self.err("a value"));
        }
        self.i += word.len();
        v.leaf(&self.path, leaf, start..self.i);
        Ok(())
    }

    /// Scans the string starting at the `"` at `self.i`; returns whether it has escapes
    /// and the offset just past its closing quote. Validates escapes' shape.
    fn string_end(&self) -> Result<(bool, usize), JsonError> {
        let mut j = self.i + 1;
        let mut esc = false;
        loop {
            // Skip eight plain bytes at a time: most of a body is long string content.
            while let Some(w) = self
                .b
                .get(j..j + 8)
                .and_then(|c| <[u8; 8]>::try_from(c).ok())
            {
                if needs_attention(u64::from_le_bytes(w)) {
                    break;
                }
                j += 8;
            }
            match self.b.get(j) {
                None => {
                    return Err(JsonError::Syntax {
                        offset: j,
                        expected: "`\"`",
                    });
                }
                Some(b'"') => return Ok((esc, j + 1)),
                Some(b'\\') => {
                    esc = true;
                    match self.b.get(j + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                        Some(b'u') => {
                            let ok = self
                                .b
                                .get(j + 2..j + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                            if !ok {
                                return Err(JsonError::Syntax {
                                    offset: j,
                                    expected: "four hex digits",
                                });
                            }
                            j += 6;
                        }
                        _ => {
                            return Err(JsonError::Syntax {
                                offset: j,
                                expected: "an escape",
                            });
                        }
                    }
                }
                Some(0..=0x1f) => {
                    return Err(JsonError::Syntax {
                        offset: j,
                        expected: "an escaped control character",
                    });
                }
                Some(_) => j += 1,
            }
        }
    }

    /// Decodes the string body `from..to` (escapes already shape-checked) into `out`.
    /// Lone surrogates are rejected, as `serde_json` rejects them.
    fn decode(&self, from: usize, to: usize, out: &mut String) -> Result<(), JsonError> {
        let mut j = from;
        let mut run = from;
        while j < to {
            if self.b.get(j) != Some(&b'\\') {
                j += 1;
                continue;
            }
            out.push_str(self.s.get(run..j).unwrap_or_default());
            let c = self.b.get(j + 1).copied().unwrap_or_default();
            j += 2;
            let ch = match c {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = self.hex4(j);
                    j += 4;
                    let code = if (0xd800..0xdc00).contains(&hi) {
                        let lo = if self.b.get(j..j + 2) == Some(b"\\u") {
                            self.hex4(j + 2)
                        } else {
                            0
                        };
                        if !(0xdc00..0xe000).contains(&lo) {
                            return Err(JsonError::Syntax {
                                offset: j,
                                expected: "a low surrogate",
                            });
                        }
                        j += 6;
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        hi
                    };
                    char::from_u32(code).ok_or(JsonError::Syntax {
                        offset: j,
                        expected: "a unicode scalar value",
                    })?
                }
                other => char::from(other),
            };
            out.push(ch);
            run = j;
        }
        out.push_str(self.s.get(run..to).unwrap_or_default());
        Ok(())
    }

    fn hex4(&self, at: usize) -> u32 {
        self.b
            .get(at..at + 4)
            .unwrap_or_default()
            .iter()
            .fold(0u32, |n, &h| {
                n * 16 + char::from(h).to_digit(16).unwrap_or(0)
            })
    }

    /// Consumes a number with JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("a digit"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("a digit"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(body: &str) -> Result<Vec<(String, String)>, JsonError> {
        let mut out = Vec::new();
        visit(
            body.as_bytes(),
            &mut |p: &Path<'_>, l: Leaf<'_>, _s: Range<usize>| {
                if let Leaf::Str(s) = l {
                    let path: Vec<String> = p
                        .segs()
                        .iter()
                        .map(|s| match s {
                            Seg::Key(k) => k.to_string(),
                            Seg::Index(i) => i.to_string(),
                        })
                        .collect();
                    out.push((path.join("."), s.to_string()));
                }
            },
        )?;
        Ok(out)
    }

    #[test]
    fn visits_values_not_keys_with_paths() {
        let got = strings(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"content":[{"type":"text","text":"a\nb"}]}],"n":1}"#,
        );
        assert_eq!(
            got,
            Ok(vec![
                ("model".into(), "m".into()),
                ("messages.0.role".into(), "user".into()),
                ("messages.0.content".into(), "hi".into()),
                ("messages.1.content.0.type".into(), "text".into()),
                ("messages.1.content.0.text".into(), "a\nb".into()),
            ])
        );
    }

    #[test]
    fn decodes_escaped_keys_and_surrogates() {
        let got = strings(r#"{"con\u0074ent":"\ud83d\ude00 \u00e9\/"}"#);
        assert_eq!(got, Ok(vec![("content".into(), "😀 é/".into())]));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "[01]",
            "{\"a\" 1}",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"a\nb\"",
            "1 2",
            "[1.]",
            "-",
            "tru",
            "{1:2}",
            "\"abc",
        ] {
            assert!(strings(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            visit(
                b"\"\xff\"",
                &mut |_: &Path<'_>, _: Leaf<'_>, _: Range<usize>| {}
            ),
            Err(JsonError::Utf8 { offset: 1 })
        );
    }

    #[test]
    fn depth_is_limited() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            strings(&deep),
            Err(JsonError::TooDeep { offset: _ })
        ));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(strings(&ok), Ok(vec![]));
    }

    #[test]
    fn rewrite_touches_only_replaced_strings() {
        let body = br#"{ "a" : "x@y.z" , "b":[ 1.50e+3, "keep\u0020me" ] }"#;
        let out = rewrite_strings(body, |_, s| s.contains('@').then(|| "[EMAIL] \"q\"".into()));
        assert_eq!(
            out,
            Ok(Some(
                br#"{ "a" : "[EMAIL] \"q\"" , "b":[ 1.50e+3, "keep\u0020me" ] }"#.to_vec()
            ))
        );
        assert_eq!(rewrite_strings(body, |_, _| None), Ok(None));
    }

    #[test]
    fn patterns_match_paths() {
        let mut hits = 0;
        visit(
            br#"{"messages":[{"content":"a"},{"content":[{"text":"b"}]}]}"#,
            &mut |p: &Path<'_>, _: Leaf<'_>, _: Range<usize>| {
                if p.matches(&[Pat::Key("messages"), Pat::AnyIndex, Pat::Key("content")]) {
                    hits += 1;
                }
                if p.matches(&[
                    Pat::Key("messages"),
                    Pat::AnyIndex,
                    Pat::Key("content"),
                    Pat::AnyIndex,
                    Pat::Key("text"),
                ]) {
                    hits += 10;
                }
            },
        )
        .ok();
        assert_eq!(hits, 11);
    }

    #[test]
    fn word_test_flags_exactly_the_special_bytes() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let want = b == b'"' || b == b'\\' || b < 0x20;
                assert_eq!(
                    needs_attention(u64::from_le_bytes(w)),
                    want,
                    "{b:#x} at {pos}"
                );
            }
        }
        assert!(!needs_attention(u64::from_le_bytes(
            *b"\xc3\xa9\xe6\x97\xa5\x7f~ "
        )));
    }

    #[test]
    fn escapes_control_characters() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\u{1}\u{1f}\"\\\u{7f}é");
        assert_eq!(out, b"\"a\\u0001\\u001f\\\"\\\\\x7f\xc3\xa9\"".to_vec());
    }

    #[test]
    fn escaping_eight_bytes_at_a_time_reads_back_as_the_text() {
        // Every escape at every offset of a word longer than one eight-byte step.
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "\u{7f}"] {
            for at in 0..20 {
                let mut text = "abcdefghijklmnopqrst".to_string();
                text.insert_str(at, special);
                text.push_str(special);
                let mut out = Vec::new();
                push_json_string(&mut out, &text);
                let back: Result<String, _> = serde_json::from_slice(&out);
                assert_eq!(back.ok().as_deref(), Some(text.as_str()));
            }
        }
    }
}
