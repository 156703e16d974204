//! Credential formats: vendor API keys and tokens, service-account files, connection
//! strings, database URLs with a password, and `password=` / `secret:` assignments.
//!
//! Each format starts with a fixed prefix or shape, so a scanner rejects ordinary words
//! after a few byte comparisons; every look-ahead is bounded (the bound is the detector's
//! maximum length, which the streaming rewriter holds back).

use super::{Kind, at, find, is_b64url, is_word, run_len, starts};

/// Longest body after `sk-ant-`.
pub(super) const ANTHROPIC_BODY_MAX: usize = 256;
/// Longest body after `sk_live_` and the like.
pub(super) const STRIPE_BODY_MAX: usize = 247;
/// A service-account match runs from `"type"` to the end of the `"private_key"` value;
/// real files are about 2.3 KB.
pub(super) const GCP_MAX: usize = 8192;
/// Longest Azure connection string.
pub(super) const AZURE_MAX: usize = 512;
/// Longest `"type": "service_account"` header: the key, up to four blanks either side of
/// the colon, the value.
pub(super) const GCP_HEADER_MAX: usize = 6 + 4 + 1 + 4 + 17;
/// Blanks skipped around a service-account file's colons.
const GCP_BLANKS: usize = 4;
/// Longest PyPI token.
pub(super) const PYPI_MAX: usize = 512;
/// Longest database URL.
pub(super) const DB_URL_MAX: usize = 512;
/// Longest assigned secret value (`password=…`).
pub(super) const ASSIGNED_VALUE_MAX: usize = 128;

/// The end of a candidate of a credential kind at token start `i`, or `None` (also for
/// kinds this module does not handle).
pub(super) fn at_kind(kind: Kind, b: &[u8], i: usize) -> Option<usize> {
    match kind {
        Kind::AnthropicKey => anthropic(b, i),
        Kind::StripeKey => stripe(b, i),
        Kind::GoogleApiKey => google(b, i),
        Kind::AzureStorageKey => azure(b, i),
        Kind::HuggingfaceToken => huggingface(b, i),
        Kind::NpmToken => npm(b, i),
        Kind::PypiToken => pypi(b, i),
        Kind::TwilioKey => twilio(b, i),
        Kind::SendgridKey => sendgrid(b, i),
        Kind::DatabaseUrl => database_url(b, i),
        _ => None,
    }
}

fn ends(b: &[u8], e: usize) -> Option<usize> {
    (!is_word(at(b, e)) && at(b, e) != b'-').then_some(e)
}

fn has_digit_and_letter(v: &[u8]) -> bool {
    v.iter().any(u8::is_ascii_digit) && v.iter().any(u8::is_ascii_alphabetic)
}

/// Anthropic API key: `sk-ant-` and at least 32 base64url characters.
fn anthropic(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"sk-ant-") {
        return None;
    }
    let n = run_len(b, i + 7, ANTHROPIC_BODY_MAX, is_b64url);
    if !(32..=ANTHROPIC_BODY_MAX).contains(&n) || !has_digit_and_letter(b.get(i + 7..i + 7 + n)?) {
        return None;
    }
    ends(b, i + 7 + n)
}

/// Stripe secret or restricted key: `sk_` / `rk_`, `live_` / `test_`, 24+ alphanumerics.
fn stripe(b: &[u8], i: usize) -> Option<usize> {
    let pre = b.get(i..i + 8)?;
    if !matches!(pre, b"sk_live_" | b"sk_test_" | b"rk_live_" | b"rk_test_") {
        return None;
    }
    let n = run_len(b, i + 8, STRIPE_BODY_MAX, |c| c.is_ascii_alphanumeric());
    if !(24..=STRIPE_BODY_MAX).contains(&n) || !has_digit_and_letter(b.get(i + 8..i + 8 + n)?) {
        return None;
    }
    ends(b, i + 8 + n)
}

/// Google API key: `AIza` and exactly 35 base64url characters.
fn google(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"AIza") || run_len(b, i + 4, 35, is_b64url) != 35 {
        return None;
    }
    ends(b, i + 39)
}

/// Whether `v` is a base64 Azure storage account key: 86 characters and `==`.
fn azure_key(v: &[u8]) -> bool {
    v.len() == 88
        && v.get(..86).is_some_and(|k| {
            k.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        })
        && v.ends_with(b"==")
}

/// Azure storage: a connection string (`DefaultEndpointsProtocol=…;AccountKey=…`, to its
/// end) or a bare `AccountKey=<88 base64>`.
fn azure(b: &[u8], i: usize) -> Option<usize> {
    let conn_char = |c: u8| c > b' ' && c < 0x7f && !matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`');
    if starts(b, i, b"DefaultEndpointsProtocol=") {
        let n = run_len(b, i, AZURE_MAX, conn_char);
        if n > AZURE_MAX {
            return None;
        }
        let mut e = i + n;
        while e > i
            && matches!(
                at(b, e - 1),
                b';' | b'.' | b',' | b'?' | b'!' | b')' | b']' | b'}'
            )
        {
            e -= 1;
        }
        let s = b.get(i..e)?;
        let k = find(s, 0, b"AccountKey=")?;
        let key = s.get(k + 11..)?;
        let klen = key.iter().position(|&c| c == b';').unwrap_or(key.len());
        return azure_key(key.get(..klen)?).then_some(e);
    }
    if starts(b, i, b"AccountKey=") {
        let v = b.get(i + 11..i + 11 + 88)?;
        if azure_key(v) && !at(b, i + 99).is_ascii_alphanumeric() {
            return Some(i + 99);
        }
    }
    None
}

/// Hugging Face access token: `hf_` and 34 letters and digits, mixed case.
fn huggingface(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"hf_") || run_len(b, i + 3, 34, |c| c.is_ascii_alphanumeric()) != 34 {
        return None;
    }
    let v = b.get(i + 3..i + 37)?;
    let mixed = v.iter().any(u8::is_ascii_uppercase) && v.iter().any(u8::is_ascii_lowercase);
    if !mixed {
        return None;
    }
    ends(b, i + 37)
}

/// npm access token: `npm_` and 36 letters and digits.
fn npm(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"npm_") || run_len(b, i + 4, 36, |c| c.is_ascii_alphanumeric()) != 36 {
        return None;
    }
    if !has_digit_and_letter(b.get(i + 4..i + 40)?) {
        return None;
    }
    ends(b, i + 40)
}

/// PyPI API token: `pypi-` and a macaroon whose base64 starts with the encoded
/// `pypi.org` location (`AgEIcHlwaS5vcmc`), at least 50 more characters.
fn pypi(b: &[u8], i: usize) -> Option<usize> {
    const PRE: &[u8] = b"pypi-AgEIcHlwaS5vcmc";
    if !starts(b, i, PRE) {
        return None;
    }
    let max = PYPI_MAX - PRE.len();
    let n = run_len(b, i + PRE.len(), max, is_b64url);
    if !(50..=max).contains(&n) {
        return None;
    }
    ends(b, i + PRE.len() + n)
}

/// Twilio API key (`SK`) or account SID (`AC`): two letters and 32 lowercase hex digits.
fn twilio(b: &[u8], i: usize) -> Option<usize> {
    let pre = b.get(i..i + 2)?;
    if !matches!(pre, b"SK" | b"AC") {
        return None;
    }
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if run_len(b, i + 2, 32, hex) != 32 || !has_digit_and_letter(b.get(i + 2..i + 34)?) {
        return None;
    }
    ends(b, i + 34)
}

/// SendGrid API key: `SG.`, 22 base64url, `.`, 43 base64url.
fn sendgrid(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"SG.") || run_len(b, i + 3, 22, is_b64url) != 22 || at(b, i + 25) != b'.' {
        return None;
    }
    if run_len(b, i + 26, 43, is_b64url) != 43 {
        return None;
    }
    ends(b, i + 69)
}

/// A database URL with a password: `postgres(ql)://`, `mysql://`, `mariadb://`,
/// `mongodb(+srv)://`, `redis(s)://`, `amqp(s)://`, then `user:password@host…` (the user
/// may be empty, as Redis writes it; the password may not). The whole URL is the match.
fn database_url(b: &[u8], i: usize) -> Option<usize> {
    const SCHEMES: &[&[u8]] = &[
        b"postgresql://",
        b"postgres://",
        b"mysql://",
        b"mariadb://",
        b"mongodb+srv://",
        b"mongodb://",
        b"rediss://",
        b"redis://",
        b"amqps://",
        b"amqp://",
    ];
    let scheme = SCHEMES.iter().find(|s| starts(b, i, s))?;
    let url_char = |c: u8| c > b' ' && c < 0x7f && !matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`');
    let s = i + scheme.len();
    let n = run_len(b, s, DB_URL_MAX - scheme.len(), url_char);
    if n > DB_URL_MAX - scheme.len() {
        return None;
    }
    let rest = b.get(s..s + n)?;
    // The userinfo ends at the last `@` before the first `/` of the path.
    let auth_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    let at_pos = rest.get(..auth_end)?.iter().rposition(|&c| c == b'@')?;
    let userinfo = rest.get(..at_pos)?;
    let colon = userinfo.iter().position(|&c| c == b':')?;
    let password = userinfo.get(colon + 1..)?;
    let host = rest.get(at_pos + 1..)?;
    if password.is_empty() || !host.first().is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    let mut e = s + n;
    while e > s + at_pos + 1
        && matches!(
            at(b, e - 1),
            b'.' | b',' | b';' | b')' | b']' | b'}' | b'?' | b'!'
        )
    {
        e -= 1;
    }
    Some(e)
}

/// Names whose assigned value is a secret, matched as the end of an identifier
/// (`DB_PASSWORD`, `client_secret`).
const SECRET_NAMES: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"pwd",
    b"secret",
    b"secret_key",
    b"client_secret",
    b"api_key",
    b"apikey",
    b"access_token",
    b"auth_token",
];

/// Values that are placeholders, not secrets.
const PLACEHOLDERS: &[&[u8]] = &[
    b"null",
    b"none",
    b"true",
    b"false",
    b"undefined",
    b"required",
    b"optional",
    b"string",
    b"changeme",
    b"password",
    b"redacted",
    b"hidden",
];

/// A secret assigned to a secret-named key at the `=` or `:` at `op`: the key
/// (`password`, `DB_PASSWORD`, `"secret"`, …) is found looking back, the value looking
/// forward. The match is the value alone, so `password=<token>` stays readable. A
/// value must be at least 6 characters and not a placeholder (`null`, `${VAR}`,
/// `<your password>`, `****`); unquoted, it must also hold a digit or a symbol, so prose
/// such as "the secret: remember" is not taken.
pub(super) fn assignment_at(b: &[u8], op: usize) -> Option<(usize, usize)> {
    // Look back: optional spaces, an optional closing quote, the key.
    let mut p = op;
    let mut spaces = 0;
    while p > 0 && at(b, p - 1) == b' ' && spaces < 2 {
        p -= 1;
        spaces += 1;
    }
    if p > 0 && matches!(at(b, p - 1), b'"' | b'\'') {
        p -= 1;
    }
    let key_end = p;
    while p > 0 && key_end - p < 64 && (is_word(at(b, p - 1)) || at(b, p - 1) == b'-') {
        p -= 1;
    }
    let key = b.get(p..key_end)?;
    let named = SECRET_NAMES.iter().any(|n| {
        key.len() >= n.len()
            && key
                .get(key.len() - n.len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(n))
            && (key.len() == n.len()
                || matches!(key.get(key.len() - n.len() - 1), Some(b'_' | b'-' | b'.')))
    });
    if !named {
        return None;
    }
    // A `:` must not be part of a URL scheme or a `::` path.
    if at(b, op) == b':' && matches!(at(b, op + 1), b'/' | b':') {
        return None;
    }
    // Look forward: optional spaces, an optional opening quote, the value.
    let mut s = op + 1;
    let mut k = 0;
    while at(b, s) == b' ' && k < 2 {
        s += 1;
        k += 1;
    }
    let quote = match at(b, s) {
        q @ (b'"' | b'\'') => {
            s += 1;
            Some(q)
        }
        _ => None,
    };
    let value_char = |c: u8| match quote {
        Some(q) => c != q && c != b'\n' && c != b'\r' && c != b'\\',
        None => {
            c > b' '
                && c < 0x7f
                && !matches!(c, b'"' | b'\'' | b',' | b';' | b'&' | b')' | b'}' | b']')
        }
    };
    let n = run_len(b, s, ASSIGNED_VALUE_MAX, value_char);
    if n > ASSIGNED_VALUE_MAX {
        return None;
    }
    let mut e = s + n;
    if quote.is_none() {
        while e > s && matches!(at(b, e - 1), b'.' | b'!' | b'?') {
            e -= 1;
        }
    } else if at(b, e) != quote.unwrap_or(0) {
        return None;
    }
    let v = b.get(s..e)?;
    if v.len() < 6 || (v.contains(&b' ') && quote.is_none()) {
        return None;
    }
    if matches!(v.first(), Some(b'$' | b'<' | b'{' | b'%' | b'*'))
        || v.iter().all(|&c| c == v[0])
        || PLACEHOLDERS.iter().any(|p| v.eq_ignore_ascii_case(p))
    {
        return None;
    }
    if quote.is_none() && v.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some((s, e))
}

/// A Google Cloud service-account key file: from a `"type"` key whose value is
/// `"service_account"` to the end of the `"private_key"` string value that follows
/// within [`GCP_MAX`] bytes. `cache` remembers the last `"private_key"` search so many
/// `"type"` keys in one text stay linear.
pub(super) fn gcp_service_account_at(
    b: &[u8],
    i: usize,
    cache: &mut Option<(usize, Option<usize>)>,
) -> Option<usize> {
    if !starts(b, i, b"\"type\"") {
        return None;
    }
    let mut p = blanks(b, i + 6);
    if at(b, p) != b':' {
        return None;
    }
    p = blanks(b, p + 1);
    if !starts(b, p, b"\"service_account\"") {
        return None;
    }
    let from = p + 17;
    let key = match *cache {
        Some((searched, res)) if searched <= from && res.is_none_or(|r| r >= from) => res,
        _ => {
            let res = find(b, from, b"\"private_key\"");
            *cache = Some((from, res));
            res
        }
    }?;
    let mut q = blanks(b, key + 13);
    if at(b, q) != b':' {
        return None;
    }
    q = blanks(b, q + 1);
    if at(b, q) != b'"' || !starts(b, q + 1, b"-----BEGIN") {
        return None;
    }
    // The value's closing quote (escaped quotes `\"` do not occur in PEM text).
    let body = q + 1;
    let close = body
        + b.get(body..(i + GCP_MAX).min(b.len()))?
            .iter()
            .position(|&c| c == b'"')?;
    Some(close + 1)
}

/// `p` moved past at most [`GCP_BLANKS`] spaces or tabs.
fn blanks(b: &[u8], mut p: usize) -> usize {
    let s = p;
    while p - s < GCP_BLANKS && matches!(at(b, p), b' ' | b'\t') {
        p += 1;
    }
    p
}

/// The start of the earliest service-account header in the last [`GCP_MAX`] bytes of `b`
/// that has no match yet: its `"private_key"` value may still arrive.
pub(super) fn gcp_open_start(b: &[u8]) -> Option<usize> {
    const VALUE: &[u8] = b"\"service_account\"";
    let from = b.len().saturating_sub(GCP_MAX);
    let mut k = from;
    while let Some(v) = find(b, k, VALUE) {
        k = v + 1;
        // Walk back over `"type"`, blanks and the colon to the header's start.
        let mut p = v;
        let mut n = 0;
        while p > 0 && n < GCP_BLANKS && matches!(at(b, p - 1), b' ' | b'\t') {
            p -= 1;
            n += 1;
        }
        if p == 0 || at(b, p - 1) != b':' {
            continue;
        }
        p -= 1;
        n = 0;
        while p > 0 && n < GCP_BLANKS && matches!(at(b, p - 1), b' ' | b'\t') {
            p -= 1;
            n += 1;
        }
        let Some(h) = p.checked_sub(6) else { continue };
        if h < from || !starts(b, h, b"\"type\"") {
            continue;
        }
        if gcp_service_account_at(b, h, &mut None).is_none() {
            return Some(h);
        }
    }
    // A header may be arriving: `"type"` near the end with its value not yet complete.
    let tail = b.len().saturating_sub(GCP_HEADER_MAX);
    let mut k = tail;
    while let Some(h) = find(b, k, b"\"type\"") {
        k = h + 1;
        if b.len() - h < GCP_HEADER_MAX {
            return Some(h);
        }
    }
    None
}
