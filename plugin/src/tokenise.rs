//! Tokenisation and redaction of detected values in a request, and the per-request
//! [`Vault`] that restores placeholders in the reply.
//!
//! # Placeholder design
//!
//! A placeholder is `<TYPE>_<CODE>`: the detector name upper-cased (`EMAIL`,
//! `CREDIT_CARD`), an underscore, and four characters of Crockford base32
//! (`0-9` and `A-Z` without `I L O U`), e.g. `EMAIL_7Q2K`.
//!
//! - Models reproduce it faithfully: it is plain ASCII with no spaces, quotes, brackets,
//!   punctuation or lower-case letters that a model might "correct", translate or
//!   re-case; the type prefix tells the model what the value was, so the reply still
//!   reads naturally ("write to EMAIL_7Q2K"); and leaving out `I L O U` removes the
//!   letters a model may swap for digits.
//! - It reveals nothing about its value: the code is `(base + k * step) mod 32^4`, where
//!   `k` counts distinct values in this request and `base`/`step` come from the request's
//!   nonce. No hash of the value is involved, so the same e-mail in two requests gets
//!   unrelated placeholders and the provider cannot link them. With `step` odd the map is
//!   a permutation, so codes never collide inside a request.
//! - It cannot be used to obtain another request's value: the mapping lives only in this
//!   request's `Vault`, and restoration only ever replaces placeholders this vault issued.
//!   A client that sends a placeholder-shaped string gets back at most its own values.
//! - No placeholder is a proper prefix of another issued in the same request unless one
//!   detector's name is another's name plus `_` and four code characters; restoration
//!   takes the longest at the leftmost position either way.
//!
//! - A placeholder that the request already contains literally is never issued
//!   ([`Vault::tokenise_avoiding`]), so echoing the client's own text restores nothing.
//!
//! Known limits: a model that alters a placeholder (re-cases it, escapes its `_` as `\_`
//! in Markdown, or splits it with spaces) gets it back unrestored, which shows the
//! placeholder and never a value; a value detected inside a JSON-encoded string (tool
//! call `arguments`) is stored as it appears there, escapes included, and restored the
//! same way.
//!
//! Redaction replaces a value by its typed mask (`[EMAIL]`), which is never restored.
//!
//! Audit: [`Rewrite::tallies`] carries detector indices and counts only, never values.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher13;

use crate::detect::{self, ScanHint};
use crate::detection::{Detection, Known};
use crate::json_strings::{self, JsonError, Path, Slot};

pub use crate::detect::Match;

/// What the tokeniser needs from a detector engine: the values of the `wanted` detectors
/// in `text` (replacing `out`'s contents), non-overlapping and sorted by start, and each
/// detector's name for placeholders and masks. Implemented by [`detect::Scanner`]; a
/// trait so tests can use small fakes.
pub trait Find {
    fn find(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>);
    /// [`Find::find`], with the shortcuts the body's detection pass allows for `text`
    /// ([`detect::Scanner::scan_with`]); a finder that cannot use them scans as `find`.
    fn find_with(&self, text: &str, wanted: &[u16], hint: ScanHint, out: &mut Vec<Match>) {
        let _ = hint;
        self.find(text, wanted, out);
    }
    fn name(&self, detector: u16) -> Option<&str>;
}

impl Find for detect::Scanner {
    fn find(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>) {
        self.scan(text, wanted, out);
    }
    fn find_with(&self, text: &str, wanted: &[u16], hint: ScanHint, out: &mut Vec<Match>) {
        self.scan_with(text, wanted, hint, out);
    }
    fn name(&self, detector: u16) -> Option<&str> {
        detect::Scanner::name(self, detector)
    }
}

/// Crockford base32: digits and upper-case letters without `I L O U`.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a placeholder's code.
const CODE_LEN: usize = 4;
/// Distinct codes, `32^4`.
const CODES: u32 = 1 << 20;
/// Distinct values one request may tokenise; later ones are redacted instead, so a
/// hostile body cannot exhaust the code space or grow the vault without bound.
pub const MAX_TOKENS: usize = 65_536;

/// Derives a request's 16-byte nonce. The wasm host has no RNG, so the filter passes what
/// makes a request unique: its `x-request-id` (or stream id), the host's time in
/// nanoseconds, and a per-VM counter (`salt`) so two requests without an id in the same
/// nanosecond still differ. sha256 makes the placeholders unpredictable from those inputs
/// without a key, and domain separation keeps the digest from being reused elsewhere.
pub fn nonce(request_id: &[u8], time_nanos: u64, salt: u64) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"writ-tokenise-nonce-v1\0");
    h.update((request_id.len() as u64).to_le_bytes());
    h.update(request_id);
    h.update(time_nanos.to_le_bytes());
    h.update(salt.to_le_bytes());
    let d = h.finalize();
    let mut n = [0u8; 16];
    n.copy_from_slice(d.get(..16).unwrap_or(&[0; 16]));
    n
}

/// The typed, irreversible mask for a detector: `email` → `[EMAIL]` (the engine's one
/// spelling, [`detect::mask`]).
pub fn mask(detector_name: &str) -> String {
    detect::mask(detector_name)
}

/// A detector name as it appears in placeholders and masks: upper-case ASCII letters,
/// digits and `_` (anything else becomes `_`).
fn type_tag(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "VALUE".into() } else { t }
}

/// Placeholder-shaped text already present in a request, which [`Vault::tokenise_avoiding`]
/// must not issue. Built with one pass over the text collecting the codes of every `_`
/// followed by four code characters, so each new placeholder costs a binary search
/// (and a substring search only on the rare code hit) instead of a scan of the body.
#[derive(Debug, Default, Clone)]
pub struct Avoid<'t> {
    text: &'t str,
    /// Sorted codes seen after a `_`.
    codes: Vec<u32>,
}

impl<'t> Avoid<'t> {
    /// Collects the placeholder-shaped codes in `text`.
    pub fn new(text: &'t str) -> Avoid<'t> {
        let b = text.as_bytes();
        let mut codes = Vec::new();
        for (i, _) in text.match_indices('_') {
            let code = b.get(i + 1..i + 1 + CODE_LEN).and_then(|w| {
                w.iter().try_fold(0u32, |n, c| {
                    let d = ALPHABET.iter().position(|a| a == c)?;
                    Some(n * 32 + d as u32)
                })
            });
            if let Some(code) = code {
                codes.push(code);
            }
        }
        codes.sort_unstable();
        codes.dedup();
        Avoid { text, codes }
    }

    /// True when `placeholder` (whose code is `code`) occurs in the text.
    fn contains(&self, placeholder: &str, code: u32) -> bool {
        self.codes.binary_search(&code).is_ok() && self.text.contains(placeholder)
    }
}

/// How a placeholder starts at some position of a text.
enum At {
    /// No placeholder starts here.
    No,
    /// The text ends inside what could still become a placeholder.
    Partial,
    /// A placeholder of this many bytes, for entry `idx`, starts here.
    Full { len: usize, idx: usize },
}

/// One request's placeholder ↔ value mapping. Lives exactly as long as the request's
/// context in the filter and is never shared, which is what makes placeholders useless
/// outside their request.
///
/// Built for bodies with tens of thousands of values (a 1 MiB prompt of e-mail addresses):
/// values and placeholders live in one byte arena, so a new value allocates nothing of
/// its own (the arena and the indexes grow by doubling) and the vault is freed in a
/// handful of calls; a lookup allocates nothing. Values are indexed by a keyed hash whose
/// chains run through the entries themselves; a placeholder's code gives its entry by
/// arithmetic (codes are drawn as `base + k * step`, a bijection of the code space).
#[derive(Debug, Clone)]
pub struct Vault {
    base: u32,
    step: u32,
    /// The inverse of `step` modulo [`CODES`]: `k = (code - base) * step_inverse`.
    step_inverse: u32,
    /// Codes drawn so far (issued or skipped), the `k` of `base + k * step`.
    issued: u32,
    /// In issue order.
    entries: Vec<Entry>,
    /// Every entry's value and placeholder text, back to back ([`Entry`] holds ranges).
    arena: String,
    /// Draw `k` → the entry it was issued to, or [`NONE`] for a code skipped because the
    /// request's own text holds it.
    entry_of_draw: Vec<u32>,
    /// Type tags in use, in the order they were first used ([`Entry::tag`] indexes it).
    tags: Vec<String>,
    /// Each tag's mask (`[EMAIL]`) for the values past [`MAX_TOKENS`], built the first
    /// time one is needed (empty until then): most requests never need one.
    masks: Vec<String>,
    /// Where a placeholder is spelled before it is issued (kept to reuse its buffer).
    scratch: String,
    /// Indices into `tags`, longest tag first (restoration takes the longest match).
    tags_by_len: Vec<u16>,
    /// (hash(value), tag) → the newest entry with that key (chained by `next_same_key`).
    /// "Was this value tokenised under any tag?" asks it once per tag (a request has a
    /// few), so a value costs one index entry, not two.
    by_key: HashMap<u64, u32, Mixed>,
    /// Per tag, every proper prefix of an issued code (1, 2 and 3 characters), so a
    /// stream cut inside a placeholder is recognised exactly.
    code_prefixes: Vec<CodePrefixes>,
    /// Keys of the values' hash ([`hash_keys`]). Values come from the client and the
    /// maps above only ever see their keyed hashes, so a client cannot aim values at one
    /// hash chain or one run of table slots.
    hash_keys: (u64, u64),
    /// Bytes a placeholder may start with.
    first: [bool; 256],
    max_len: usize,
}

/// One tokenised value: where its value and placeholder sit in [`Vault::arena`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    value: (u32, u32),
    placeholder: (u32, u32),
    /// Index into [`Vault::tags`].
    tag: u16,
    next_same_key: u32,
}

/// End of a hash chain.
const NONE: u32 = u32::MAX;

/// Bits of [`Vault::code_prefixes`] per tag: 32 + 32^2 + 32^3 prefixes.
const PREFIX_BITS: usize = 32 + 1024 + 32768;

/// Prefixes a tag lists before they become a bitmap: a code adds at most three.
const FEW_PREFIXES: usize = 96;

/// The proper prefixes of one tag's issued codes, as bits (see [`prefix_bit`]). A request
/// tokenises a handful of values, so they start as a short list: a bitmap of every
/// prefix is 4 KB to zero per tag, which cost each tokenising request more than the
/// tokenising itself. Past [`FEW_PREFIXES`] the list becomes that bitmap, so lookups
/// stay constant-time in a request with thousands of values.
#[derive(Debug, Clone)]
enum CodePrefixes {
    Few(Vec<u32>),
    Bits(Box<[u64]>),
}

impl Default for CodePrefixes {
    fn default() -> Self {
        CodePrefixes::Few(Vec::new())
    }
}

impl CodePrefixes {
    fn insert(&mut self, bit: usize) {
        match self {
            CodePrefixes::Few(few) => {
                let Ok(b) = u32::try_from(bit) else { return };
                if few.contains(&b) {
                    return;
                }
                if few.len() < FEW_PREFIXES {
                    few.push(b);
                    return;
                }
                let listed = std::mem::take(few);
                *self = CodePrefixes::Bits(vec![0u64; PREFIX_BITS.div_ceil(64)].into());
                for f in listed.into_iter().chain([b]) {
                    self.insert(f as usize);
                }
            }
            CodePrefixes::Bits(bits) => {
                if let Some(w) = bits.get_mut(bit / 64) {
                    *w |= 1 << (bit % 64);
                }
            }
        }
    }

    fn contains(&self, bit: usize) -> bool {
        match self {
            CodePrefixes::Few(few) => u32::try_from(bit).is_ok_and(|b| few.contains(&b)),
            CodePrefixes::Bits(bits) => bits
                .get(bit / 64)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0),
        }
    }
}

/// The bit of a code prefix of `len` (1 to 3) characters with value `prefix`.
fn prefix_bit(len: u32, prefix: u32) -> usize {
    let offset = match len {
        1 => 0,
        2 => 32,
        _ => 32 + 1024,
    };
    offset + prefix as usize
}

/// A hasher for keys that are already hashes (values' keyed hashes) or random codes: one
/// multiply spreads them over the table. Never used on anything a client chooses.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Mixed = BuildHasherDefault<MixHasher>;

/// Whether `tag` is [`type_tag`] of `name`, without building the tag.
fn is_tag_of(tag: &str, name: &str) -> bool {
    if name.is_empty() {
        return tag == "VALUE";
    }
    tag.len() == name.len()
        && tag.bytes().zip(name.bytes()).all(|(t, n)| {
            t == if n.is_ascii_alphanumeric() {
                n.to_ascii_uppercase()
            } else {
                b'_'
            }
        })
}

/// The vault's hash keys, from the request's nonce: the bytes the codes do not use
/// (8..16) and those they do (0..8, of which placeholders reveal at most 40 bits). The
/// value index must be keyed by something a client cannot know before it sends the
/// request: `RandomState` is not that in the engine, because wasm32-unknown-unknown has no
/// random source and std keys it from fixed addresses, the same in every VM.
fn hash_keys(nonce: &[u8; 16]) -> (u64, u64) {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(nonce.get(at..at + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(w)
    };
    (word(8), word(0))
}

/// The index key of a value under a tag: its keyed hash, moved per tag.
fn key_hash(value_hash: u64, tag: u16) -> u64 {
    value_hash ^ u64::from(tag).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
}

/// The inverse of an odd `step` modulo [`CODES`] (a power of two), by Newton's iteration:
/// each round doubles the correct low bits (3, 6, 12, 24 ≥ 20).
fn inverse_mod_codes(step: u32) -> u32 {
    let mut inv = step;
    for _ in 0..4 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(step.wrapping_mul(inv)));
    }
    inv % CODES
}

/// The value of a code character, or `None` outside the alphabet.
fn code_digit(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|d| d as u32)
}

impl Vault {
    /// An empty vault whose codes derive from `nonce` (see [`nonce`]).
    pub fn new(nonce: [u8; 16]) -> Vault {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(nonce.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(w)
        };
        let step = (word(4) % CODES) | 1;
        Vault {
            base: word(0) % CODES,
            step,
            step_inverse: inverse_mod_codes(step),
            issued: 0,
            entries: Vec::new(),
            arena: String::new(),
            entry_of_draw: Vec::new(),
            tags: Vec::new(),
            masks: Vec::new(),
            scratch: String::new(),
            tags_by_len: Vec::new(),
            by_key: HashMap::default(),
            code_prefixes: Vec::new(),
            hash_keys: hash_keys(&nonce),
            first: [false; 256],
            max_len: 0,
        }
    }

    /// Number of distinct values tokenised.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was tokenised, so replies need no restoration.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Length in bytes of the longest placeholder: the most a streamed reply is delayed.
    pub fn max_placeholder_len(&self) -> usize {
        self.max_len
    }

    /// The keyed hash of a value (SipHash-1-3 under [`Vault::hash_keys`]).
    fn hash_value(&self, value: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        h.write(value.as_bytes());
        h.finish()
    }

    /// Room for `additional` more values, so a string with many finds grows the indexes
    /// once rather than by repeated doubling (rehashing every entry each time).
    pub fn reserve(&mut self, additional: usize) {
        let additional = additional.min(MAX_TOKENS.saturating_sub(self.entries.len()));
        self.entries.reserve(additional);
        self.entry_of_draw.reserve(additional);
        // A value and its placeholder: an e-mail address and `EMAIL_7Q2K` are about 32.
        self.arena.reserve(additional.saturating_mul(32));
        self.by_key.reserve(additional);
    }

    /// The text of `range` in the arena.
    fn text(&self, (start, end): (u32, u32)) -> &str {
        self.arena
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Appends `s` to the arena and returns its range there. The arena stays under
    /// 4 GiB: it holds at most a request body's values and their placeholders.
    fn push_text(&mut self, s: &str) -> (u32, u32) {
        let start = self.arena.len() as u32;
        self.arena.push_str(s);
        (start, self.arena.len() as u32)
    }

    /// True when `value` was tokenised in this request; response-side redaction leaves
    /// such values alone, since the client sent them.
    pub fn contains_value(&self, value: &str) -> bool {
        let h = self.hash_value(value);
        (0..self.tags.len() as u16).any(|tag| self.entry_of(h, tag, value).is_some())
    }

    /// The entry of `value` (whose hash is `value_hash`) under tag `tag`, if issued.
    fn entry_of(&self, value_hash: u64, tag: u16, value: &str) -> Option<u32> {
        let mut i = self
            .by_key
            .get(&key_hash(value_hash, tag))
            .copied()
            .unwrap_or(NONE);
        while let Some(e) = self.entries.get(i as usize) {
            if e.tag == tag && self.text(e.value) == value {
                return Some(i);
            }
            i = e.next_same_key;
        }
        None
    }

    /// The placeholder for `value` found by `detector_name`: the same one every time the
    /// same value recurs in this request. Past [`MAX_TOKENS`] distinct values it returns
    /// the mask instead (fail safe: the value still never leaves).
    pub fn tokenise(&mut self, detector_name: &str, value: &str) -> Cow<'_, str> {
        self.tokenise_avoiding(detector_name, value, &Avoid::default())
    }

    /// [`Self::tokenise`], never issuing a placeholder that occurs in `avoid`'s text (the
    /// request's own text): if a prompt happens to contain `EMAIL_7Q2K` literally, a
    /// value must not get that placeholder, or the model's echo of the literal would be
    /// "restored" into the value.
    pub fn tokenise_avoiding(
        &mut self,
        detector_name: &str,
        value: &str,
        avoid: &Avoid<'_>,
    ) -> Cow<'_, str> {
        let tag = match self.tags.iter().position(|t| is_tag_of(t, detector_name)) {
            Some(t) => t,
            None => {
                if self.entries.len() >= MAX_TOKENS {
                    return Cow::Owned(format!("[{}]", type_tag(detector_name)));
                }
                let tag = type_tag(detector_name);
                self.masks.push(String::new());
                self.tags.push(tag);
                self.code_prefixes.push(CodePrefixes::default());
                let mut order: Vec<u16> = (0..self.tags.len() as u16).collect();
                order.sort_by_key(|&t| {
                    std::cmp::Reverse(self.tags.get(usize::from(t)).map_or(0, String::len))
                });
                self.tags_by_len = order;
                self.tags.len() - 1
            }
        };
        let tag_id = tag as u16;
        let value_hash = self.hash_value(value);
        if let Some(e) = self.entry_of(value_hash, tag_id, value) {
            return Cow::Borrowed(
                self.entries
                    .get(e as usize)
                    .map_or("", |e| self.text(e.placeholder)),
            );
        }
        if self.entries.len() >= MAX_TOKENS {
            return self.mask_of(tag);
        }
        // The placeholder is spelled in a scratch buffer the vault keeps, so drawing one
        // allocates nothing; it is copied into the arena once it is issued.
        let mut placeholder = std::mem::take(&mut self.scratch);
        let drawn = loop {
            if self.issued >= CODES {
                self.scratch = placeholder;
                return self.mask_of(tag);
            }
            let k = self.issued;
            self.issued += 1;
            let drawn = self.base.wrapping_add(k.wrapping_mul(self.step)) % CODES;
            self.spell(tag, drawn, &mut placeholder);
            if !avoid.contains(&placeholder, drawn) {
                break drawn;
            }
            self.entry_of_draw.push(NONE);
        };
        let idx = self.entries.len() as u32;
        self.entry_of_draw.push(idx);
        if let Some(&b) = placeholder.as_bytes().first() {
            self.first[usize::from(b)] = true;
        }
        self.max_len = self.max_len.max(placeholder.len());
        if let Some(prefixes) = self.code_prefixes.get_mut(tag) {
            for len in 1..CODE_LEN as u32 {
                prefixes.insert(prefix_bit(len, drawn >> (5 * (CODE_LEN as u32 - len))));
            }
        }
        let next_same_key = self
            .by_key
            .insert(key_hash(value_hash, tag_id), idx)
            .unwrap_or(NONE);
        let entry = Entry {
            value: self.push_text(value),
            placeholder: self.push_text(&placeholder),
            tag: tag_id,
            next_same_key,
        };
        self.scratch = placeholder;
        self.entries.push(entry);
        Cow::Borrowed(self.text(entry.placeholder))
    }

    /// The mask of `tag`, built once.
    fn mask_of(&mut self, tag: usize) -> Cow<'_, str> {
        let (Some(mask), Some(tag_text)) = (self.masks.get_mut(tag), self.tags.get(tag)) else {
            return Cow::Borrowed("[VALUE]");
        };
        if mask.is_empty() {
            *mask = format!("[{tag_text}]");
        }
        Cow::Borrowed(mask.as_str())
    }

    /// Spells the placeholder of `tag` and code `drawn` into `out` (cleared first).
    fn spell(&self, tag: usize, drawn: u32, out: &mut String) {
        out.clear();
        out.push_str(self.tags.get(tag).map_or("VALUE", String::as_str));
        out.push('_');
        let mut chars = [0u8; CODE_LEN];
        let mut code = drawn;
        for c in chars.iter_mut().rev() {
            *c = ALPHABET.get((code % 32) as usize).copied().unwrap_or(b'0');
            code /= 32;
        }
        out.extend(chars.iter().map(|&c| char::from(c)));
    }

    /// The entry the code `code` was issued to, if it was issued in this vault.
    fn entry_of_code(&self, code: u32) -> Option<u32> {
        let k = code.wrapping_sub(self.base).wrapping_mul(self.step_inverse) % CODES;
        if k >= self.issued {
            return None;
        }
        self.entry_of_draw
            .get(k as usize)
            .copied()
            .filter(|&i| i != NONE)
    }

    /// What starts at `text[i..]`; `at_end` means no more text will follow.
    fn at(&self, text: &[u8], i: usize, at_end: bool) -> At {
        let rest = text.get(i..).unwrap_or_default();
        let mut best: Option<(usize, usize)> = None;
        let mut partial = false;
        for &tag_id in &self.tags_by_len {
            let Some(t) = self.tags.get(usize::from(tag_id)) else {
                continue;
            };
            let tl = t.len();
            let head = rest.get(..rest.len().min(tl + 1)).unwrap_or_default();
            // `rest` shorter than `T_`: a prefix of it is a partial placeholder.
            if head.len() <= tl {
                if !at_end && !head.is_empty() && t.as_bytes().starts_with(head) {
                    partial = true;
                }
                continue;
            }
            if head.get(..tl) != Some(t.as_bytes()) || head.get(tl) != Some(&b'_') {
                continue;
            }
            let code_chars = rest.get(tl + 1..).unwrap_or_default();
            let n = code_chars.len().min(CODE_LEN);
            let Some(code) = code_chars
                .get(..n)
                .unwrap_or_default()
                .iter()
                .try_fold(0u32, |acc, &c| Some(acc * 32 + code_digit(c)?))
            else {
                continue;
            };
            let full = tl + 1 + CODE_LEN;
            if n == CODE_LEN {
                if let Some(idx) = self.entry_of_code(code)
                    && self
                        .entries
                        .get(idx as usize)
                        .is_some_and(|e| e.tag == tag_id)
                    && best.is_none_or(|(l, _)| full > l)
                {
                    best = Some((full, idx as usize));
                }
            } else if !at_end && (n == 0 || self.has_code_prefix(tag_id, n as u32, code)) {
                partial = true;
            }
        }
        match (partial, best) {
            (true, _) => At::Partial,
            (false, Some((len, idx))) => At::Full { len, idx },
            (false, None) => At::No,
        }
    }

    /// Whether a code issued under tag `tag_id` starts with the `len` characters `prefix`.
    fn has_code_prefix(&self, tag_id: u16, len: u32, prefix: u32) -> bool {
        let bit = prefix_bit(len, prefix);
        self.code_prefixes
            .get(usize::from(tag_id))
            .is_some_and(|p| p.contains(bit))
    }

    /// Appends `text` to `out` with this vault's placeholders replaced by their values,
    /// and returns how many bytes of `text` it consumed. Unless `at_end`, it stops at the
    /// first position where the text ends inside what could still become a placeholder,
    /// so the caller holds back only that suffix (at most the longest placeholder).
    pub fn restore_into(&self, text: &str, out: &mut String, at_end: bool) -> usize {
        self.restore_into_with(text, out, at_end, &|value, out| out.push_str(value))
    }

    /// [`Vault::restore_into`], writing each restored value with `write` (tool-call
    /// arguments escape it for the JSON text they are in, see [`crate::json_text`]).
    pub fn restore_into_with(
        &self,
        text: &str,
        out: &mut String,
        at_end: bool,
        write: &dyn Fn(&str, &mut String),
    ) -> usize {
        let b = text.as_bytes();
        if self.entries.is_empty() {
            out.push_str(text);
            return b.len();
        }
        let mut run = 0usize;
        let mut i = 0usize;
        while i < b.len() {
            if !self.first[usize::from(b[i])] {
                i += 1;
                continue;
            }
            match self.at(b, i, at_end) {
                At::No => i += 1,
                At::Partial => {
                    out.push_str(text.get(run..i).unwrap_or_default());
                    return i;
                }
                At::Full { len, idx } => {
                    out.push_str(text.get(run..i).unwrap_or_default());
                    write(
                        self.entries.get(idx).map_or("", |e| self.text(e.value)),
                        out,
                    );
                    i += len;
                    run = i;
                }
            }
        }
        out.push_str(text.get(run..).unwrap_or_default());
        b.len()
    }

    /// Cheap pre-check: false when `s` cannot contain any of this vault's placeholders
    /// (it has none of their first bytes), so callers can skip copying it.
    pub fn may_contain_placeholder(&self, s: &str) -> bool {
        !self.entries.is_empty() && s.bytes().any(|c| self.first[usize::from(c)])
    }

    /// `s` with every placeholder of this vault replaced by its value (borrowed when
    /// there is none). Placeholders of other requests stay as they are.
    pub fn restore_str<'s>(&self, s: &'s str) -> Cow<'s, str> {
        if !self.may_contain_placeholder(s) {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len());
        self.restore_into(s, &mut out, true);
        if out == s {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(out)
        }
    }

    /// Restores placeholders in every string of a JSON reply (non-streamed), object keys
    /// included. `Ok(None)` when nothing changed, so the filter leaves the body alone.
    pub fn restore_json(&self, body: &[u8]) -> Result<Option<Vec<u8>>, JsonError> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        json_strings::rewrite_strings_and_keys(body, |_, s, _| match self.restore_str(s) {
            Cow::Owned(o) => Some(o),
            Cow::Borrowed(_) => None,
        })
    }
}

/// Per-detector counts of what a rewrite did, for the audit record (never values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub detector: u16,
    pub tokenised: u32,
    pub redacted: u32,
}

/// The result of [`rewrite_request`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The new body, or `None` when nothing was replaced (forward the original).
    pub body: Option<Vec<u8>>,
    /// Sorted by detector; only detectors that replaced something.
    pub tallies: Vec<Tally>,
}

/// Keys whose string values are protocol structure, not content: rewriting them would
/// break the request (an unknown model, role or tool name) and they carry no user data.
/// (`tool_use_id` and `call_id` are the Anthropic and Responses links between a tool call
/// and its result.)
pub const STRUCTURAL_KEYS: &[&str] = &[
    "model",
    "role",
    "type",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "id",
    "name",
];

/// True for a string the rewrite leaves alone (see [`STRUCTURAL_KEYS`]).
pub fn is_structural(path: &Path<'_>) -> bool {
    path.last_key()
        .is_some_and(|k| STRUCTURAL_KEYS.contains(&k))
}

/// Rewrites a request body: every detected value of a `tokenise` detector becomes its
/// placeholder (recorded in `vault`), every value of a `redact` detector its mask (redact
/// wins when a detector is in both). Every string value is covered — `messages[].content`
/// and its `text` parts, `tool_calls[].function.arguments`, `prompt`, `input`, and any
/// other field — except the structural ones ([`is_structural`]), and so is every object
/// key (`{"metadata": {"jane@example.com": 1}}`).
pub fn rewrite_request(
    body: &[u8],
    finder: &impl Find,
    tokenise: &[u16],
    redact: &[u16],
    vault: &mut Vault,
) -> Result<Rewrite, JsonError> {
    rewrite_request_with(body, finder, None, tokenise, redact, vault)
}

/// [`rewrite_request`] reading the request's one detection pass where it knows a string's
/// matches ([`Detection::matches`]), so the body is not scanned again; `finder` scans the
/// strings it cannot answer for. Same result as without it.
pub fn rewrite_request_with(
    body: &[u8],
    finder: &impl Find,
    detection: Option<&Detection>,
    tokenise: &[u16],
    redact: &[u16],
    vault: &mut Vault,
) -> Result<Rewrite, JsonError> {
    let wanted = union(tokenise, redact);
    let mut tallies: BTreeMap<u16, Tally> = BTreeMap::new();
    if wanted.is_empty() {
        json_strings::visit(
            body,
            &mut |_: &Path<'_>, _: json_strings::Leaf<'_>, _: std::ops::Range<usize>| {},
        )?;
        return Ok(Rewrite::default());
    }
    let mut hits = Vec::new();
    // `visit` rejects non-UTF-8 bodies before any callback runs, so this is never empty
    // for a body that gets rewritten.
    let text = std::str::from_utf8(body).unwrap_or_default();
    let mut avoid: Option<Avoid<'_>> = None;
    let mut rw = Rewriter {
        finder,
        redact,
        vault,
        tallies: &mut tallies,
    };
    let new = json_strings::rewrite_strings_and_keys_at(body, |path, s, slot, at| {
        if slot == Slot::Value && is_structural(path) {
            return None;
        }
        hits.clear();
        match detection.map(|d| d.matches(at, &wanted)) {
            Some(Known::Matches(known)) => hits.extend_from_slice(known),
            Some(Known::Scan(hint)) => finder.find_with(s, &wanted, hint, &mut hits),
            None => finder.find(s, &wanted, &mut hits),
        }
        if hits.is_empty() {
            return None;
        }
        let avoid = avoid.get_or_insert_with(|| Avoid::new(text));
        // Tool-call arguments are JSON text: no replacement splits one of its escapes,
        // and the vault keeps the value as the arguments mean it.
        let carrier = if slot == Slot::Value
            && path
                .last_key()
                .is_some_and(crate::json_text::is_json_text_field)
        {
            crate::json_text::widen_matches(s, &mut hits);
            Carrier::JsonText
        } else {
            Carrier::Json
        };
        Some(rw.replace(s, &hits, avoid, carrier))
    })?;
    Ok(Rewrite {
        body: new,
        tallies: tallies.into_values().collect(),
    })
}

/// The detectors either list names, sorted and without repeats.
fn union(tokenise: &[u16], redact: &[u16]) -> Vec<u16> {
    let mut wanted: Vec<u16> = tokenise.iter().chain(redact).copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    wanted
}

/// Where a rewritten value travels, which decides how a replacement is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A JSON string (the splice escapes it).
    Json,
    /// JSON text inside a JSON string (tool-call arguments): a value is found in its
    /// escaped spelling and tokenised as it reads decoded ([`crate::json_text::decode`]),
    /// so it is restored the same wherever the reply puts it.
    JsonText,
    /// A request header value: placeholders and masks are plain ASCII and need nothing.
    Header,
    /// The query string: replacements are percent-encoded (`[EMAIL]` → `%5BEMAIL%5D`).
    Query,
}

/// The replacement state one request shares across its carriers: the same value gets
/// the same placeholder in the body, a header and the query string.
struct Rewriter<'a, F: Find + ?Sized> {
    finder: &'a F,
    redact: &'a [u16],
    vault: &'a mut Vault,
    tallies: &'a mut BTreeMap<u16, Tally>,
}

impl<F: Find + ?Sized> Rewriter<'_, F> {
    /// `s` with every hit replaced by its mask or placeholder, counted in the tallies.
    fn replace(&mut self, s: &str, hits: &[Match], avoid: &Avoid<'_>, carrier: Carrier) -> String {
        let mut out = String::with_capacity(s.len() + 16 * hits.len());
        self.vault.reserve(hits.len());
        let mut at = 0usize;
        for h in hits {
            let (Some(keep), Some(value)) = (s.get(at..h.start), s.get(h.start..h.end)) else {
                continue;
            };
            let name = self.finder.name(h.detector).unwrap_or("value");
            out.push_str(keep);
            let t = self.tallies.entry(h.detector).or_insert(Tally {
                detector: h.detector,
                tokenised: 0,
                redacted: 0,
            });
            let new = if self.redact.contains(&h.detector) {
                t.redacted += 1;
                Cow::Owned(mask(name))
            } else {
                t.tokenised += 1;
                if carrier == Carrier::JsonText {
                    let plain = crate::json_text::decode(value);
                    self.vault.tokenise_avoiding(name, &plain, avoid)
                } else {
                    self.vault.tokenise_avoiding(name, value, avoid)
                }
            };
            match carrier {
                // Placeholders and masks are plain ASCII without `"` or `\`.
                Carrier::Json | Carrier::JsonText | Carrier::Header => out.push_str(&new),
                Carrier::Query => percent_encode_into(&new, &mut out),
            }
            at = h.end;
        }
        out.push_str(s.get(at..).unwrap_or_default());
        out
    }
}

/// Appends `s` with every byte outside RFC 3986's unreserved set percent-encoded.
fn percent_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Rewrites one request header value or the query string like a body string: detected
/// values become placeholders (in `vault`, shared with the body) or masks. Detection sees
/// through percent-encoding and the other disguises, and the whole original span is
/// replaced. `None` when nothing was found. These carriers are never restored: nothing
/// sends them back.
pub fn rewrite_carrier(
    value: &str,
    carrier: Carrier,
    finder: &impl Find,
    tokenise: &[u16],
    redact: &[u16],
    vault: &mut Vault,
) -> Option<(String, Vec<Tally>)> {
    let wanted = union(tokenise, redact);
    let mut hits = Vec::new();
    finder.find(value, &wanted, &mut hits);
    if hits.is_empty() {
        return None;
    }
    let mut tallies = BTreeMap::new();
    let mut rw = Rewriter {
        finder,
        redact,
        vault,
        tallies: &mut tallies,
    };
    let new = rw.replace(value, &hits, &Avoid::new(value), carrier);
    Some((new, tallies.into_values().collect()))
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Finds `@`-words as detector 0 and runs of 9+ digits as detector 1.
    struct Fake;
    impl Find for Fake {
        fn find(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>) {
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let j = (i..b.len())
                    .find(|&j| b[j].is_ascii_whitespace() || b[j] == b'"')
                    .unwrap_or(b.len());
                let word = &b[i..j];
                let det = if word.contains(&b'@') {
                    Some(0)
                } else if word.len() >= 9 && word.iter().all(u8::is_ascii_digit) {
                    Some(1)
                } else {
                    None
                };
                if let Some(d) = det.filter(|d| wanted.contains(d)) {
                    out.push(Match {
                        detector: d,
                        start: i,
                        end: j,
                    });
                }
                i = j + 1;
            }
        }
        fn name(&self, detector: u16) -> Option<&str> {
            ["email", "us_ssn"].get(usize::from(detector)).copied()
        }
    }

    #[test]
    fn placeholders_are_stable_distinct_and_shaped() {
        let mut v = Vault::new(nonce(b"req-1", 1, 0));
        let a = v.tokenise("email", "a@x.io").into_owned();
        let b = v.tokenise("email", "b@x.io").into_owned();
        assert_eq!(v.tokenise("email", "a@x.io"), a);
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.starts_with("EMAIL_") && p.len() == 10, "{p}");
            assert!(p[6..].bytes().all(|c| ALPHABET.contains(&c)));
        }
        // Another request: unrelated codes for the same value.
        let mut w = Vault::new(nonce(b"req-2", 1, 0));
        assert_ne!(w.tokenise("email", "a@x.io"), a);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn placeholders_already_in_the_request_are_skipped() {
        let mut probe = Vault::new([3; 16]);
        let first = probe.tokenise("email", "a@x.io").into_owned();
        let body = format!(r#"{{"messages":[{{"content":"{first} is mine; mail a@x.io"}}]}}"#);
        let avoid = Avoid::new(&body);
        assert!(avoid.codes.len() == 1);
        let mut v = Vault::new([3; 16]);
        let rw = rewrite_request(body.as_bytes(), &Fake, &[0], &[], &mut v);
        let out = String::from_utf8(rw.unwrap_or_default().body.unwrap_or_default());
        let second = v.tokenise("email", "a@x.io").into_owned();
        assert_ne!(first, second);
        assert_eq!(
            out.unwrap_or_default(),
            format!(r#"{{"messages":[{{"content":"{first} is mine; mail {second}"}}]}}"#)
        );
        assert_eq!(v.restore_str(&first), first);
    }

    #[test]
    fn codes_never_collide_within_a_request() {
        let mut v = Vault::new(nonce(b"r", 7, 7));
        let mut seen = HashSet::new();
        for i in 0..5000 {
            let p = v.tokenise("phone", &i.to_string()).into_owned();
            assert!(seen.insert(p));
        }
    }

    /// A placeholder's entry is found by arithmetic on its code (no index of codes): every
    /// issued code gives back its own value, and a code the same nonce would only issue
    /// later gives back nothing.
    #[test]
    fn every_issued_code_finds_its_value_and_no_other_code_does() {
        for seed in 0..4u64 {
            let n = nonce(b"arith", seed, seed);
            let mut v = Vault::new(n);
            assert_eq!((v.step.wrapping_mul(v.step_inverse)) % CODES, 1);
            let issued: Vec<(String, String)> = (0..3000)
                .map(|i| {
                    let value = format!("{i}@x.io");
                    (v.tokenise("email", &value).into_owned(), value)
                })
                .collect();
            for (p, value) in &issued {
                assert_eq!(v.restore_str(p), value.as_str());
            }
            let mut later = Vault::new(n);
            for i in 0..3100 {
                let p = later.tokenise("email", &format!("{i}@x.io")).into_owned();
                if i >= 3000 {
                    assert_eq!(v.restore_str(&p), p, "code {p} was never issued here");
                }
            }
        }
    }

    /// The value index is keyed by the request's nonce, not by a key every VM shares: the
    /// same value hashes differently in two requests, and the same in one.
    #[test]
    fn values_are_hashed_under_the_requests_own_key() {
        let a = Vault::new(nonce(b"req-a", 1, 0));
        let b = Vault::new(nonce(b"req-b", 1, 0));
        let a_again = Vault::new(nonce(b"req-a", 1, 0));
        for v in ["a@x.io", "4111 1111 1111 1111", ""] {
            assert_ne!(a.hash_value(v), b.hash_value(v));
            assert_eq!(a.hash_value(v), a_again.hash_value(v));
        }
        // Bytes 8..16 of the nonce, which the codes never use, change the hash.
        let mut n = [0u8; 16];
        let zero = Vault::new(n);
        n[12] = 1;
        assert_ne!(
            Vault::new(n).hash_value("a@x.io"),
            zero.hash_value("a@x.io")
        );
    }

    /// Past [`MAX_TOKENS`] distinct values a new value gets its tag's mask, and values
    /// already in the vault keep their placeholders.
    #[test]
    fn values_past_the_cap_are_masked_and_earlier_ones_keep_their_placeholders() {
        let mut v = Vault::new(nonce(b"cap", 0, 0));
        let first = v.tokenise("email", "0@x.io").into_owned();
        for i in 1..MAX_TOKENS {
            v.tokenise("email", &format!("{i}@x.io"));
        }
        assert_eq!(v.len(), MAX_TOKENS);
        assert_eq!(v.tokenise("email", "late@x.io"), "[EMAIL]");
        assert_eq!(v.tokenise("email", "later@x.io"), "[EMAIL]");
        assert_eq!(
            v.tokenise("credit_card", "4111 1111 1111 1111"),
            "[CREDIT_CARD]"
        );
        assert_eq!(v.tokenise("email", "0@x.io"), first.as_str());
        assert_eq!(v.len(), MAX_TOKENS);
        assert_eq!(v.restore_str(&first), "0@x.io");
    }

    /// "Did the client send this value?" holds for a value tokenised under any tag, and
    /// for no other value.
    #[test]
    fn contains_value_finds_values_under_every_tag_and_nothing_else() {
        let mut v = Vault::new(nonce(b"cv", 0, 0));
        assert!(!v.contains_value("a@x.io"));
        v.tokenise("email", "a@x.io");
        v.tokenise("phone", "+1 415 555 0132");
        v.tokenise("employee_id", "EMP-123456");
        for i in 0..200 {
            v.tokenise("email", &format!("{i}@x.io"));
        }
        for sent in ["a@x.io", "+1 415 555 0132", "EMP-123456", "199@x.io"] {
            assert!(v.contains_value(sent), "{sent}");
        }
        for other in ["b@x.io", "+1 415 555 0133", "EMP-123457", "200@x.io", ""] {
            assert!(!v.contains_value(other), "{other}");
        }
    }

    #[test]
    fn restores_only_own_placeholders() {
        let mut v = Vault::new(nonce(b"a", 0, 0));
        let p = v.tokenise("email", "a@x.io").into_owned();
        let mut other = Vault::new(nonce(b"b", 0, 0));
        let q = other.tokenise("email", "secret@x.io").into_owned();
        let text = format!("to {p}, cc {q}, {p}s");
        assert_eq!(v.restore_str(&text), format!("to a@x.io, cc {q}, a@x.ios"));
        assert!(matches!(v.restore_str("nothing here"), Cow::Borrowed(_)));
        assert_eq!(v.restore_str("EMAIL_"), "EMAIL_");
    }

    #[test]
    fn restore_into_holds_back_only_a_possible_prefix() {
        let mut v = Vault::new(nonce(b"a", 0, 0));
        let p = v.tokenise("email", "a@x.io").into_owned();
        for cut in 1..p.len() {
            let text = format!("hi {}", &p[..cut]);
            let mut out = String::new();
            let used = v.restore_into(&text, &mut out, false);
            assert_eq!((used, out.as_str()), (3, "hi "));
        }
        let mut out = String::new();
        assert_eq!(v.restore_into("hi EMAILX", &mut out, false), 9);
        let mut out = String::new();
        assert_eq!(v.restore_into("hi EMAIL_ZZZZ", &mut out, false), 13);
    }

    /// A stream cut after `EMAIL_` and one to three code characters is held back exactly
    /// when an issued code starts with them, whether the tag's prefixes are still a
    /// short list or already the bitmap.
    #[test]
    fn held_back_prefixes_are_exactly_the_issued_ones_listed_or_mapped() {
        for values in [1usize, 20, 32, 40, 60, 97, 300] {
            let mut v = Vault::new(nonce(b"p", values as u64, 0));
            let codes: Vec<String> = (0..values)
                .map(|i| {
                    let p = v.tokenise("email", &format!("u{i}@x.io")).into_owned();
                    p.trim_start_matches("EMAIL_").to_string()
                })
                .collect();
            let listed = matches!(v.code_prefixes.first(), Some(CodePrefixes::Few(_)));
            // Codes share their shorter prefixes, so where the list turns into the bitmap
            // depends on the codes drawn; the ends of the range are certain.
            if values <= FEW_PREFIXES / 3 {
                assert!(listed, "{values}");
            }
            if values > FEW_PREFIXES {
                assert!(!listed, "{values}");
            }
            let alphabet: Vec<char> = ALPHABET.iter().map(|&b| char::from(b)).collect();
            let mut candidates: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
            for len in 2..CODE_LEN {
                let longer: Vec<String> = candidates
                    .iter()
                    .filter(|c| c.len() == len - 1)
                    .flat_map(|c| alphabet.iter().map(move |a| format!("{c}{a}")))
                    .collect();
                candidates.extend(longer);
            }
            let mut held = 0;
            for c in &candidates {
                let mut out = String::new();
                let used = v.restore_into(&format!("hi EMAIL_{c}"), &mut out, false);
                let issued = codes.iter().any(|code| code.starts_with(c.as_str()));
                assert_eq!(used == 3, issued, "{values} values, prefix {c}");
                held += usize::from(issued);
            }
            assert!(held >= CODE_LEN - 1, "{values}: {held}");
        }
    }

    #[test]
    fn rewrites_request_and_counts_without_values() {
        let body = br#"{"model":"a@b.c","messages":[{"role":"user","content":"mail a@x.io or a@x.io ssn 123456789"}],"prompt":"b@y.io"}"#;
        let mut v = Vault::new(nonce(b"r", 1, 2));
        let rw = rewrite_request(body, &Fake, &[0], &[1], &mut v);
        let Ok(rw) = rw else { panic!("{rw:?}") };
        let out = String::from_utf8(rw.body.unwrap_or_default()).unwrap_or_default();
        let pa = v.tokenise("email", "a@x.io").into_owned();
        let pb = v.tokenise("email", "b@y.io").into_owned();
        assert_eq!(
            out,
            format!(
                r#"{{"model":"a@b.c","messages":[{{"role":"user","content":"mail {pa} or {pa} ssn [US_SSN]"}}],"prompt":"{pb}"}}"#
            )
        );
        assert_eq!(
            rw.tallies,
            vec![
                Tally {
                    detector: 0,
                    tokenised: 3,
                    redacted: 0
                },
                Tally {
                    detector: 1,
                    tokenised: 0,
                    redacted: 1
                }
            ]
        );
        let restored = v.restore_json(out.as_bytes());
        assert!(matches!(restored, Ok(Some(ref b)) if b.windows(6).any(|w| w == b"a@x.io")));
    }

    #[test]
    fn object_keys_are_tokenised_and_restored() {
        let body = br#"{"metadata":{"a@x.io":1,"note":"a@x.io"}}"#;
        let mut v = Vault::new(nonce(b"k", 1, 2));
        let rw = rewrite_request(body, &Fake, &[0], &[], &mut v).unwrap();
        let out = String::from_utf8(rw.body.unwrap()).unwrap();
        let p = v.tokenise("email", "a@x.io").into_owned();
        assert_eq!(out, format!(r#"{{"metadata":{{"{p}":1,"note":"{p}"}}}}"#));
        assert_eq!(rw.tallies[0].tokenised, 2);
        let back = v.restore_json(out.as_bytes()).unwrap().unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn header_and_query_values_share_the_vault_and_masks_are_percent_encoded() {
        let mut v = Vault::new(nonce(b"c", 1, 3));
        let (h, t) =
            rewrite_carrier("mail a@x.io now", Carrier::Header, &Fake, &[0], &[], &mut v).unwrap();
        let p = v.tokenise("email", "a@x.io").into_owned();
        assert_eq!(h, format!("mail {p} now"));
        assert_eq!((t[0].detector, t[0].tokenised), (0, 1));
        // The body gets the same placeholder for the same value.
        let rw = rewrite_request(br#"{"m":"a@x.io"}"#, &Fake, &[0], &[], &mut v).unwrap();
        assert_eq!(rw.body.unwrap(), format!(r#"{{"m":"{p}"}}"#).into_bytes());
        let (q, _) =
            rewrite_carrier("n=a 123456789", Carrier::Query, &Fake, &[], &[1], &mut v).unwrap();
        // `Fake` splits words at spaces only; the real scanner also stops at `&` and `=`.
        assert_eq!(q, "n=a %5BUS_SSN%5D");
        assert_eq!(
            rewrite_carrier("nothing here", Carrier::Query, &Fake, &[0], &[1], &mut v),
            None
        );
    }

    #[test]
    fn malformed_bodies_are_errors_even_without_detectors() {
        let mut v = Vault::new([0; 16]);
        assert!(rewrite_request(b"{", &Fake, &[], &[], &mut v).is_err());
        assert!(rewrite_request(b"{", &Fake, &[0], &[], &mut v).is_err());
        assert_eq!(
            rewrite_request(b"{\"a\":\"none\"}", &Fake, &[0], &[], &mut v),
            Ok(Rewrite::default())
        );
    }
}
