//! Disguised values made to look like themselves, with offsets back to the original text.
//!
//! A client (or a model) can write a value so that a byte-level scanner does not see it:
//! fullwidth or other scripts' digits (`４１１１ …`), look-alike letters (Cyrillic `а` for
//! `a`), zero-width or bidi characters inside it (`jane\u{200b}.doe@…`), percent-encoding
//! (`jane.doe%40example.com`), or a base64 or hex run. This module produces the forms the
//! detectors should also see:
//!
//! - a **folded view** ([`View`]): compatibility-folded digits, letters, punctuation and
//!   spaces, format characters removed and `%XX` escapes decoded, where every byte
//!   remembers the original bytes it came from;
//! - **decoded runs** ([`decoded_runs`]): base64 (standard or URL-safe) and hex runs
//!   decoded, when the result is text.
//!
//! A match found in either is reported on the *whole original span* it came from, so the
//! tokeniser and the redactors replace the value whatever form it was written in. Both
//! passes are linear in the text; decoding is one level deep (a base64 run inside a
//! percent-encoded one is not decoded twice) and a run longer than [`MAX_DECODED_RUN`] is
//! not decoded.

/// Longest encoded run that is decoded and scanned, in bytes. Longer runs (inline images,
/// file uploads) are binary in practice; not decoding them bounds the work per request.
pub(crate) const MAX_DECODED_RUN: usize = 256 * 1024;

/// Shortest base64 or hex run worth decoding: shorter ones are ordinary words and numbers,
/// and no detected value fits in fewer decoded bytes than this allows.
const MIN_ENCODED_RUN: usize = 12;

/// How much longer than the value itself a disguised spelling can be, for streaming
/// hold-back: a fullwidth or percent-encoded character takes 3 bytes for 1.
pub const EXPANSION: usize = 3;

/// The text as the detectors should see it, and where each of its bytes came from.
#[derive(Debug)]
pub(crate) struct View {
    /// The folded text.
    pub text: String,
    /// For each byte of `text`, the original byte range it came from.
    origin: Vec<(u32, u32)>,
}

impl View {
    /// The folded view of `text`, or `None` when folding changes nothing (the common
    /// case, decided without allocating for pure ASCII text without `%`).
    pub fn of(text: &str) -> Option<View> {
        if text.is_ascii() && !has_percent_escape(text.as_bytes()) {
            return None;
        }
        if u32::try_from(text.len()).is_err() {
            return None;
        }
        let mut v = View {
            text: String::with_capacity(text.len()),
            origin: Vec::with_capacity(text.len()),
        };
        let mut changed = false;
        let b = text.as_bytes();
        let mut i = 0usize;
        while i < text.len() {
            let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
                break;
            };
            let (c, used) = if c == '%' {
                match percent_char(b, i) {
                    Some(d) => d,
                    None => (c, 1),
                }
            } else {
                (c, c.len_utf8())
            };
            let span = (i as u32, (i + used) as u32);
            let source_len = used;
            i += used;
            if is_format(c) {
                changed = true;
                continue;
            }
            match fold(c) {
                Some(a) => {
                    changed |= source_len != 1 || a != c;
                    v.push(a, span);
                }
                None => {
                    changed |= source_len != c.len_utf8();
                    v.push(c, span);
                }
            }
        }
        changed.then_some(v)
    }

    fn push(&mut self, c: char, span: (u32, u32)) {
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.origin.push(span);
        }
    }

    /// The original byte range of the view's bytes `start..end` (`start < end`).
    pub fn original(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let first = self.origin.get(start)?;
        let last = self.origin.get(end.checked_sub(1)?)?;
        Some((first.0 as usize, last.1 as usize))
    }
}

/// The character a `%XX` escape (or a run of them forming one UTF-8 character) at `i`
/// stands for, and how many bytes of the original it takes.
/// Whether `b` holds a `%XX` escape (a bare `%`, as in `100%`, folds to nothing).
fn has_percent_escape(b: &[u8]) -> bool {
    // `contains` on bytes is a vectorised memchr; most texts have no `%` at all.
    if !b.contains(&b'%') {
        return false;
    }
    let mut k = 0usize;
    while let Some(off) = b.get(k..).and_then(|t| t.iter().position(|&c| c == b'%')) {
        let p = k + off;
        if hex_byte(b, p).is_some() {
            return true;
        }
        k = p + 1;
    }
    false
}

fn percent_char(b: &[u8], i: usize) -> Option<(char, usize)> {
    let first = hex_byte(b, i)?;
    let len = match first {
        0x00..=0x7f => return Some((char::from(first), 3)),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let mut buf = [first, 0, 0, 0];
    for (k, slot) in buf.iter_mut().enumerate().take(len).skip(1) {
        *slot = hex_byte(b, i + 3 * k)?;
    }
    let s = std::str::from_utf8(buf.get(..len)?).ok()?;
    let c = s.chars().next()?;
    Some((c, 3 * len))
}

/// The byte `%XX` at `i` encodes.
fn hex_byte(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let h = hex_val(*b.get(i + 1)?)?;
    let l = hex_val(*b.get(i + 2)?)?;
    Some(h << 4 | l)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Invisible characters that a value can carry without looking different: zero-width
/// spaces and joiners, the soft hyphen, bidi controls, word joiners, variation selectors,
/// the byte order mark and tag characters.
fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F
            | 0x1160
            | 0x17B4
            | 0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xE0000..=0xE007F
    )
}

/// The first code point of each block of ten decimal digits (Unicode `Nd`) outside ASCII.
const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// Cyrillic and Greek letters that look like Latin ones, and the Latin letter they pass
/// for (the confusables a value can be spelled with and still read the same).
const LOOKALIKES: &[(char, char)] = &[
    ('а', 'a'),
    ('в', 'b'),
    ('е', 'e'),
    ('о', 'o'),
    ('р', 'p'),
    ('с', 'c'),
    ('у', 'y'),
    ('х', 'x'),
    ('і', 'i'),
    ('ј', 'j'),
    ('ѕ', 's'),
    ('ԁ', 'd'),
    ('һ', 'h'),
    ('ԛ', 'q'),
    ('ԝ', 'w'),
    ('А', 'A'),
    ('В', 'B'),
    ('Е', 'E'),
    ('К', 'K'),
    ('М', 'M'),
    ('Н', 'H'),
    ('О', 'O'),
    ('Р', 'P'),
    ('С', 'C'),
    ('Т', 'T'),
    ('Х', 'X'),
    ('І', 'I'),
    ('Ј', 'J'),
    ('Ѕ', 'S'),
    ('Α', 'A'),
    ('Β', 'B'),
    ('Ε', 'E'),
    ('Ζ', 'Z'),
    ('Η', 'H'),
    ('Ι', 'I'),
    ('Κ', 'K'),
    ('Μ', 'M'),
    ('Ν', 'N'),
    ('Ο', 'O'),
    ('Ρ', 'P'),
    ('Τ', 'T'),
    ('Υ', 'Y'),
    ('Χ', 'X'),
    ('ο', 'o'),
    ('ν', 'v'),
];

/// The ASCII character `c` is a compatibility form or look-alike of, if any: fullwidth
/// forms, other scripts' digits, super- and subscript digits, mathematical letters and
/// digits, look-alike Cyrillic and Greek letters, dashes, dots, at signs and spaces.
fn fold(c: char) -> Option<char> {
    let u = c as u32;
    if u < 0x80 {
        return None;
    }
    let ascii = |v: u32| char::from_u32(v).filter(char::is_ascii);
    match u {
        // Fullwidth ASCII.
        0xFF01..=0xFF5E => return ascii(u - 0xFF01 + 0x21),
        0x00A0 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => return Some(' '),
        0x2010..=0x2015 | 0x2212 | 0xFE58 | 0xFE63 => return Some('-'),
        0x2024 | 0xFE52 | 0x3002 | 0xFF61 => return Some('.'),
        0xFE6B => return Some('@'),
        0x00B2 => return Some('2'),
        0x00B3 => return Some('3'),
        0x00B9 => return Some('1'),
        0x2070 => return Some('0'),
        0x2074..=0x2079 => return ascii(u - 0x2074 + u32::from(b'4')),
        0x2080..=0x2089 => return ascii(u - 0x2080 + u32::from(b'0')),
        // Mathematical alphanumeric letters: 13 alphabets of A–Z then a–z.
        0x1D400..=0x1D6A3 => {
            let k = (u - 0x1D400) % 52;
            return if k < 26 {
                ascii(u32::from(b'A') + k)
            } else {
                ascii(u32::from(b'a') + k - 26)
            };
        }
        _ => {}
    }
    if let Some(zero) = DIGIT_ZEROS.iter().rev().find(|&&z| z <= u)
        && u - zero < 10
    {
        return ascii(u32::from(b'0') + (u - zero));
    }
    LOOKALIKES.iter().find(|(k, _)| *k == c).map(|(_, a)| *a)
}

fn b64_val(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    }))
}

/// Whether a decoded byte can belong to text: printable ASCII, tab and line breaks, or
/// any byte of a multi-byte UTF-8 sequence (checked as a whole afterwards).
fn texty(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\r' | 0x20..=0x7e | 0x80..=0xff)
}

/// Base64 (standard or URL-safe, padding optional): the text `run` decodes to, stopping
/// early at the first byte that cannot be text (binary data is rejected within a few
/// bytes).
fn decode_b64(run: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(run.len() / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in run {
        if c == b'=' {
            break;
        }
        acc = acc << 6 | b64_val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (acc >> bits) as u8;
            if !texty(byte) {
                return None;
            }
            out.push(byte);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Hex (either case, even length): the text `run` decodes to, stopping early at the
/// first byte that cannot be text.
fn decode_hex(run: &[u8]) -> Option<String> {
    if !run.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(run.len() / 2);
    for pair in run.chunks_exact(2) {
        let (h, l) = (hex_val(*pair.first()?)?, hex_val(*pair.get(1)?)?);
        let byte = h << 4 | l;
        if !texty(byte) {
            return None;
        }
        out.push(byte);
    }
    String::from_utf8(out).ok()
}

/// Calls `f(start, end, decoded)` for every base64 or hex run of `text` (delimited by
/// bytes outside the base64 alphabet, at least [`MIN_ENCODED_RUN`] and at most
/// [`MAX_DECODED_RUN`] bytes, trailing `=` padding included in the span) that decodes to
/// text. A run of hex digits is tried as hex first, then as base64. Stops when `f`
/// returns false. Linear: each byte is visited once to find runs and once to decode.
pub(crate) fn decoded_runs(text: &str, f: &mut dyn FnMut(usize, usize, &str) -> bool) {
    let b = text.as_bytes();
    let n = b.len();
    let in_run = |p: usize| b.get(p).is_some_and(|&c| B64[usize::from(c)]);
    // Fast path: a run of at least `MIN_ENCODED_RUN` bytes starting in `i..=probe` must
    // cover `probe`, so when `probe` is outside the alphabet the whole window is skipped
    // (prose, with a space every few bytes, is mostly skipped 12 bytes at a time). `i` is
    // always at a run boundary.
    let mut i = 0usize;
    while i + MIN_ENCODED_RUN <= n {
        let probe = i + MIN_ENCODED_RUN - 1;
        if !in_run(probe) {
            i = probe + 1;
            continue;
        }
        let mut body_end = probe + 1;
        while in_run(body_end) {
            body_end += 1;
        }
        // A long enough run ending at `body_end` covers `body_end - MIN_ENCODED_RUN`: when
        // that byte is outside the alphabet the run is too short (a word of prose), and
        // its start need not be searched for.
        if !in_run(body_end - MIN_ENCODED_RUN) {
            i = body_end;
            continue;
        }
        let mut start = probe;
        while start > i && in_run(start - 1) {
            start -= 1;
        }
        let mut end = body_end;
        while b.get(end) == Some(&b'=') && end - body_end < 2 {
            end += 1;
        }
        i = end;
        let len = body_end - start;
        if !(MIN_ENCODED_RUN..=MAX_DECODED_RUN).contains(&len) {
            continue;
        }
        let Some(run) = b.get(start..body_end) else {
            continue;
        };
        // Plain words and numbers are not encodings: a base64 candidate needs a digit
        // or a symbol and both cases, or a hex candidate only hex digits.
        let hex = run.iter().all(u8::is_ascii_hexdigit);
        let decoded = if hex {
            decode_hex(run).or_else(|| looks_b64(run).then(|| decode_b64(run)).flatten())
        } else if looks_b64(run) {
            decode_b64(run)
        } else {
            None
        };
        if let Some(d) = decoded
            && !d.is_empty()
            && !f(start, end, &d)
        {
            return;
        }
    }
}

/// The base64 alphabet (standard and URL-safe) as a table, for the run search.
static B64: [bool; 256] = b64_table();

const fn b64_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
        c += 1;
    }
    t
}

/// Whether a run could be base64 rather than a word: it mixes upper and lower case, or
/// has digits or base64 symbols.
fn looks_b64(run: &[u8]) -> bool {
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    let other = run.iter().any(|c| !c.is_ascii_alphabetic());
    (upper && lower) || other
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn view(s: &str) -> View {
        View::of(s).unwrap_or_else(|| panic!("no view for {s:?}"))
    }

    #[test]
    fn ascii_without_escapes_needs_no_view() {
        assert!(View::of("jane.doe@example.com 4111 1111").is_none());
        assert!(
            View::of("café").is_none(),
            "non-ASCII that folds to nothing"
        );
    }

    #[test]
    fn fullwidth_and_other_digits_fold() {
        let v = view("card ４１１１ １１１１");
        assert_eq!(v.text, "card 4111 1111");
        // `4` of the view came from the three bytes of `４`.
        assert_eq!(v.original(5, 6), Some((5, 8)));
        assert_eq!(view("٤١١١").text, "4111");
        assert_eq!(view("४१११").text, "4111");
        assert_eq!(view("𝟒𝟏").text, "41");
        assert_eq!(
            view("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ").text,
            "jane@example.com"
        );
        assert_eq!(view("jаne").text, "jane", "Cyrillic а");
    }

    #[test]
    fn format_characters_vanish_but_keep_their_span() {
        let s = "jane\u{200b}.doe@example.com";
        let v = view(s);
        assert_eq!(v.text, "jane.doe@example.com");
        assert_eq!(v.original(0, v.text.len()), Some((0, s.len())));
        assert_eq!(view("a\u{00ad}b\u{202e}c\u{feff}").text, "abc");
    }

    #[test]
    fn percent_escapes_decode_including_utf8() {
        let s = "jane.doe%40example.com";
        let v = view(s);
        assert_eq!(v.text, "jane.doe@example.com");
        assert_eq!(v.original(0, v.text.len()), Some((0, s.len())));
        assert_eq!(v.original(8, 9), Some((8, 11)));
        // %EF%BC%94 is fullwidth 4, then folded.
        assert_eq!(view("%EF%BC%94%31").text, "41");
        // Not an escape: nothing to fold.
        assert!(View::of("100% sure %zz").is_none());
    }

    #[test]
    fn runs_decode_only_to_text() {
        let mut got = Vec::new();
        let b64 = "amFuZS5kb2VAZXhhbXBsZS5jb20="; // jane.doe@example.com
        let hex = "6a616e65406578616d706c652e636f6d"; // jane@example.com
        let text = format!("x {b64} y {hex} z AAECAwQFBgcICQoLDA0ODw== internationalization");
        decoded_runs(&text, &mut |s, e, d| {
            got.push((text[s..e].to_string(), d.to_string()));
            true
        });
        assert_eq!(
            got,
            vec![
                (b64.to_string(), "jane.doe@example.com".to_string()),
                (hex.to_string(), "jane@example.com".to_string()),
            ]
        );
    }

    #[test]
    fn huge_runs_are_not_decoded() {
        let run = "QUFB".repeat(MAX_DECODED_RUN / 4 + 1);
        let mut n = 0;
        decoded_runs(&run, &mut |_, _, _| {
            n += 1;
            true
        });
        assert_eq!(n, 0);
    }
}
