//! Hand-written linear scanners for the built-in detectors.
//!
//! One pass over the bytes: a 256-entry table says which detectors can begin with a byte,
//! and a detector is only tried at a token start (the previous byte is not a word byte)
//! or, for email, at an `@`. Every scanner looks ahead a bounded distance, or (private key
//! blocks) uses a cached forward search, so the whole scan is linear in the text. All
//! detectors match ASCII only, so match bounds always fall on UTF-8 char boundaries.

mod ids;
mod secrets;

use super::validate::{
    iban_length, iban_mod97, itin_parts, known_iin, luhn_digits, number, taxpayer_id_parts,
};

/// Declares the built-in kinds once: the enum, [`ALL`] and [`KINDS`] follow from one list.
macro_rules! kinds {
    ($($k:ident),* $(,)?) => {
        /// Built-in detector kinds. The declaration order is the tie-break priority when
        /// two built-ins match the same span: keyword-gated national numbers before the
        /// formats they share a layout with, validated formats before the heuristic phone.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kind { $($k),* }

        /// Every kind in priority order, to map an index back to a kind.
        pub(crate) const ALL: &[Kind] = &[$(Kind::$k),*];
    };
}

kinds! {
    CreditCard,
    Iban,
    UsItin,
    UsSsn,
    UsAbaRouting,
    UsNpi,
    UsPassport,
    UkNhs,
    AuTfn,
    NlBsn,
    DeTaxId,
    PlPesel,
    UsEin,
    UsMbi,
    UkNino,
    UkBankAccount,
    FrNir,
    EsDni,
    ItCodiceFiscale,
    SePersonnummer,
    FiHetu,
    BeNationalNumber,
    EuVat,
    InAadhaar,
    InPan,
    CaSin,
    AuMedicare,
    SgNric,
    PassportMrz,
    BtcAddress,
    EthAddress,
    MacAddress,
    Ipv4,
    Ipv6,
    Email,
    AwsAccessKey,
    GithubToken,
    SlackToken,
    AnthropicKey,
    OpenaiKey,
    StripeKey,
    GoogleApiKey,
    GcpServiceAccount,
    AzureStorageKey,
    HuggingfaceToken,
    NpmToken,
    PypiToken,
    TwilioKey,
    SendgridKey,
    DatabaseUrl,
    PasswordAssignment,
    Jwt,
    PrivateKey,
    Phone,
}

/// Number of built-in kinds (at most 64: a kind mask is a `u64`).
pub(crate) const KINDS: usize = ALL.len();
const _: () = assert!(KINDS <= 64);

/// A set of kinds, one bit per kind.
pub(crate) type Mask = u64;

impl Kind {
    /// This kind's bit in a kind mask.
    pub(crate) const fn bit(self) -> Mask {
        1 << (self as u32)
    }
}

/// Kinds classified from the shared digit-group [`Run`] parsed at a digit token start.
const NUMERIC: Mask = Kind::CreditCard.bit()
    | Kind::UsItin.bit()
    | Kind::UsSsn.bit()
    | Kind::Ipv4.bit()
    | Kind::Phone.bit()
    | ids::RUN_KINDS;

/// Kinds whose values may begin with a digit (besides [`NUMERIC`]).
const DIGIT_START: Mask = Kind::Ipv6.bit()
    | Kind::UsMbi.bit()
    | Kind::EsDni.bit()
    | Kind::FiHetu.bit()
    | Kind::PassportMrz.bit()
    | Kind::BtcAddress.bit()
    | Kind::EthAddress.bit()
    | Kind::MacAddress.bit();

/// Kinds whose values may begin with an uppercase letter.
const UPPER_START: Mask = Kind::Iban.bit()
    | Kind::UsPassport.bit()
    | Kind::UkNino.bit()
    | Kind::EsDni.bit()
    | Kind::ItCodiceFiscale.bit()
    | Kind::EuVat.bit()
    | Kind::InPan.bit()
    | Kind::SgNric.bit()
    | Kind::PassportMrz.bit();

/// For each byte, the kinds that may start with it.
static FIRST: [Mask; 256] = first_table();

const fn first_table() -> [Mask; 256] {
    let mut t = [0 as Mask; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let mut m: Mask = 0;
        if b.is_ascii_digit() {
            m |= NUMERIC | DIGIT_START;
        }
        if matches!(b, b'a'..=b'f' | b'A'..=b'F' | b':') {
            m |= Kind::Ipv6.bit();
        }
        if b.is_ascii_hexdigit() {
            m |= Kind::MacAddress.bit();
        }
        if b.is_ascii_uppercase() {
            m |= UPPER_START;
        }
        match b {
            b'+' | b'(' => m |= Kind::Phone.bit(),
            b'A' => {
                m |= Kind::AwsAccessKey.bit()
                    | Kind::GoogleApiKey.bit()
                    | Kind::AzureStorageKey.bit()
                    | Kind::TwilioKey.bit()
            }
            b'D' => m |= Kind::AzureStorageKey.bit(),
            b'S' => m |= Kind::TwilioKey.bit() | Kind::SendgridKey.bit(),
            b'B' | b'b' => m |= Kind::BtcAddress.bit(),
            b'g' => m |= Kind::GithubToken.bit(),
            b'x' => m |= Kind::SlackToken.bit(),
            b's' => m |= Kind::OpenaiKey.bit() | Kind::AnthropicKey.bit() | Kind::StripeKey.bit(),
            b'r' => m |= Kind::StripeKey.bit() | Kind::DatabaseUrl.bit(),
            b'h' => m |= Kind::HuggingfaceToken.bit(),
            b'n' => m |= Kind::NpmToken.bit(),
            b'p' => m |= Kind::PypiToken.bit() | Kind::DatabaseUrl.bit(),
            b'm' | b'a' => m |= Kind::DatabaseUrl.bit(),
            b'"' => m |= Kind::GcpServiceAccount.bit(),
            b'e' => m |= Kind::Jwt.bit(),
            b'-' => m |= Kind::PrivateKey.bit(),
            _ => {}
        }
        t[c] = m;
        c += 1;
    }
    t
}

/// For each byte, the kinds that may have it as their second byte: with [`FIRST`], a
/// two-byte prefilter, so an ordinary word start (`The`, `prose`) reaches no scanner.
/// Kinds parsed from the digit-group run are not filtered here.
static SECOND: [Mask; 256] = second_table();

const fn second_table() -> [Mask; 256] {
    let mut t = [0 as Mask; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let mut m: Mask = (NUMERIC & !Kind::UsPassport.bit()) | Kind::Phone.bit();
        if b.is_ascii_hexdigit() || b == b':' {
            m |= Kind::Ipv6.bit() | Kind::MacAddress.bit();
        }
        if b.is_ascii_uppercase() {
            m |= Kind::Iban.bit()
                | Kind::EuVat.bit()
                | Kind::UkNino.bit()
                | Kind::InPan.bit()
                | Kind::ItCodiceFiscale.bit()
                | Kind::UsMbi.bit();
        }
        if b.is_ascii_digit() {
            m |= Kind::EsDni.bit()
                | Kind::SgNric.bit()
                | Kind::FiHetu.bit()
                | Kind::UsPassport.bit();
        }
        if b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'<' {
            m |= Kind::PassportMrz.bit();
        }
        if b.is_ascii_alphanumeric() {
            m |= Kind::BtcAddress.bit();
        }
        m |= match b {
            b'x' | b'X' => Kind::EthAddress.bit(),
            b'K' => Kind::AwsAccessKey.bit() | Kind::TwilioKey.bit(),
            b'S' | b'B' => Kind::AwsAccessKey.bit(),
            b'C' => Kind::AwsAccessKey.bit() | Kind::TwilioKey.bit(),
            b'I' => Kind::GoogleApiKey.bit(),
            b'c' | b'e' => Kind::AzureStorageKey.bit() | Kind::DatabaseUrl.bit(),
            b'G' => Kind::SendgridKey.bit(),
            b'h' | b'i' => Kind::GithubToken.bit(),
            b'o' => Kind::SlackToken.bit() | Kind::DatabaseUrl.bit(),
            b'a' => Kind::SlackToken.bit() | Kind::DatabaseUrl.bit(),
            b'k' => Kind::OpenaiKey.bit() | Kind::AnthropicKey.bit() | Kind::StripeKey.bit(),
            b'f' => Kind::HuggingfaceToken.bit(),
            b'p' => Kind::NpmToken.bit(),
            b'y' => Kind::PypiToken.bit() | Kind::DatabaseUrl.bit() | Kind::Jwt.bit(),
            b'm' => Kind::DatabaseUrl.bit(),
            b't' => Kind::GcpServiceAccount.bit(),
            b'-' => Kind::PrivateKey.bit(),
            _ => 0,
        };
        t[c] = m;
        c += 1;
    }
    t
}

/// Bytes at which a look-back detector is tried: `@` (email) and `=`/`:` (assignments).
const fn trigger(c: u8, mask: Mask) -> bool {
    (c == b'@' && mask & Kind::Email.bit() != 0)
        || (matches!(c, b'=' | b':') && mask & Kind::PasswordAssignment.bit() != 0)
}

/// The byte at `i`, or 0 past either end (0 is a non-word byte for every rule here).
#[inline(always)]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Word bytes: ASCII letters, digits and `_`. Non-ASCII bytes count as boundaries so a
/// value right after a non-Latin word is still found.
#[inline(always)]
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[inline(always)]
fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Per-scan state that keeps the private-key END search linear over many BEGIN lines.
#[derive(Default)]
pub(crate) struct State {
    /// (searched from, result) of the last search for `-----END `.
    end_cache: Option<(usize, Option<usize>)>,
    /// A JWT start before this offset lies inside a base64url run already rejected, so
    /// runs like `eyJa-eyJa-…` are not rescanned from every `-`.
    jwt_fail_until: usize,
    /// The digit-group run parsed at the current token start.
    run: Run,
    /// (searched from, result) of the last search for a service account's `"private_key"`.
    gcp_cache: Option<(usize, Option<usize>)>,
}

/// Scans `text` for the kinds in `mask`, calling `sink(kind, start, end)` for each
/// candidate. Candidates from token starts are emitted left to right, non-overlapping;
/// an email may start before the previous candidate ends (its local part is found by
/// looking back from `@`), so callers resolve overlaps. `sink` returns false to stop.
pub(crate) fn scan(b: &[u8], mask: Mask, sink: &mut dyn FnMut(Kind, usize, usize) -> bool) {
    scan_from(b, mask, 0, sink);
}

/// [`scan`] starting at `from`, which must be a position the scan from 0 walks through
/// without a candidate before it: the first position [`present`] found any kind of
/// `mask` at (the two walks visit the same positions until the first candidate). Then it
/// finds exactly what [`scan`] finds; `from` past the end finds nothing.
pub(crate) fn scan_from(
    b: &[u8],
    mask: Mask,
    from: usize,
    sink: &mut dyn FnMut(Kind, usize, usize) -> bool,
) {
    if mask == 0 {
        return;
    }
    let mut st = State::default();
    let n = b.len();
    let mut i = from;
    while i < n {
        let c = at(b, i);
        if INERT[usize::from(c)] {
            i += 1;
            continue;
        }
        let m = FIRST[usize::from(c)] & mask & SECOND[usize::from(at(b, i + 1))];
        if m != 0 {
            let prev = at(b, i.wrapping_sub(1));
            if !is_word(prev)
                && let Some((k, e)) = best_at(b, i, prev, m, &mut st)
            {
                if !sink(k, i, e) {
                    return;
                }
                i = e;
                continue;
            }
        }
        if trigger(c, mask) {
            let found = if c == b'@' {
                email_at(b, i).map(|(s, e)| (Kind::Email, s, e))
            } else {
                secrets::assignment_at(b, i).map(|(s, e)| (Kind::PasswordAssignment, s, e))
            };
            if let Some((k, s, e)) = found {
                if !sink(k, s, e) {
                    return;
                }
                i = e;
                continue;
            }
        }
        i += 1;
        if WORD[usize::from(c)] {
            i = skip_word(b, i);
        }
    }
}

/// The end of the word continuing at `i`. Nothing starts inside a word, so the scan
/// skips it: the lowercase letters eight at a time (most prose), then byte by byte from
/// the first other byte (in prose, the space or punctuation that ends the word).
#[inline(always)]
fn skip_word(b: &[u8], mut i: usize) -> usize {
    const H: u64 = 0x8080_8080_8080_8080;
    const L: u64 = 0x0101_0101_0101_0101;
    while let Some(chunk) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let x = u64::from_le_bytes(chunk);
        // Per byte, in its high bit (`x | H` keeps every byte's difference inside the
        // byte, so no borrow crosses bytes): set where the low seven bits are >= b'a' and
        // where they are >= b'{'. A lowercase letter is ASCII (its own high bit clear),
        // the first and not the second; `other` marks every byte that is not one.
        let ge_a = (x | H) - L * 0x61;
        let ge_brace = (x | H) - L * 0x7b;
        let other = (x | !(ge_a & !ge_brace)) & H;
        if other != 0 {
            // Bytes are little-endian in `x`: the lowest marked byte is the first one.
            i += (other.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    i + b
        .get(i..)
        .unwrap_or_default()
        .iter()
        .position(|&x| !WORD[usize::from(x)])
        .unwrap_or(b.len().saturating_sub(i))
}

/// Bytes at which the scan can do nothing, whatever the mask: no kind starts there, no
/// look-back is triggered there, and no word continues from them. Spaces and most
/// punctuation, about a fifth of prose, cost the main loop one table load each.
static INERT: [bool; 256] = inert_table();

const fn inert_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = FIRST[c] == 0 && !trigger(b, Mask::MAX) && !word_table()[c];
        c += 1;
    }
    t
}

/// Word bytes as a table, for the inner skip loop.
static WORD: [bool; 256] = word_table();

const fn word_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_';
        c += 1;
    }
    t
}

/// The longest candidate of the kinds in `m` starting at token start `i`, ties going to
/// the earlier kind.
fn best_at(b: &[u8], i: usize, prev: u8, m: Mask, st: &mut State) -> Option<(Kind, usize)> {
    let mut best: Option<(Kind, usize)> = None;
    candidates_at(b, i, prev, m, st, &mut |k: Kind, e: Option<usize>| {
        if let Some(e) = e
            && e > i
            && best.is_none_or(|(bk, be)| e > be || (e == be && (k as u8) < (bk as u8)))
        {
            best = Some((k, e));
        }
    });
    best
}

/// Tries every kind in `m` at token start `i`, calling `offer` with each kind and its
/// candidate's end (`None` or an end not past `i` when it has none). Each kind's answer
/// depends on the text and `i` only, never on the other kinds in `m`.
#[inline(always)]
fn candidates_at(
    b: &[u8],
    i: usize,
    prev: u8,
    m: Mask,
    st: &mut State,
    offer: &mut impl FnMut(Kind, Option<usize>),
) {
    let c = at(b, i);
    if m & NUMERIC != 0 && (c.is_ascii_digit() || c == b'+' || c == b'(') {
        // A digit right after `1.` / `1-` / `1,` continues a longer number: not a start.
        let joined = matches!(prev, b'.' | b',' | b'-' | b'/' | b':')
            && at(b, i.wrapping_sub(2)).is_ascii_digit();
        if !joined && st.run.parse(b, i) {
            let run = &st.run;
            if m & Kind::CreditCard.bit() != 0 {
                offer(Kind::CreditCard, card(b, run));
            }
            if m & Kind::UsItin.bit() != 0 {
                offer(Kind::UsItin, taxpayer_id(b, run, itin_parts));
            }
            if m & Kind::UsSsn.bit() != 0 {
                offer(Kind::UsSsn, taxpayer_id(b, run, taxpayer_id_parts));
            }
            if m & Kind::Ipv4.bit() != 0 {
                offer(Kind::Ipv4, ipv4(b, run));
            }
            if m & Kind::Phone.bit() != 0 {
                offer(Kind::Phone, phone(b, run));
            }
            if m & ids::RUN_KINDS != 0 && !run.plus {
                ids::numeric(b, i, run, m, offer);
            }
        }
    }
    // Every other kind in `m`, in priority order.
    let mut rest = m & !(NUMERIC & !Kind::UsPassport.bit()) & !Kind::Phone.bit();
    while rest != 0 {
        let k = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        let Some(&kind) = ALL.get(k) else { break };
        let e = match kind {
            Kind::Ipv6 if prev != b':' && prev != b'.' => ipv6_at(b, i),
            Kind::Iban => iban_at(b, i),
            Kind::AwsAccessKey => aws_at(b, i),
            Kind::GithubToken => github_at(b, i),
            Kind::SlackToken => slack_at(b, i),
            Kind::OpenaiKey => openai_at(b, i),
            Kind::Jwt if i >= st.jwt_fail_until => {
                let (found, run_end) = jwt_at(b, i);
                if found.is_none() {
                    st.jwt_fail_until = run_end;
                }
                found
            }
            Kind::PrivateKey => private_key_at(b, i, st),
            Kind::GcpServiceAccount => secrets::gcp_service_account_at(b, i, &mut st.gcp_cache),
            _ => ids::at_kind(kind, b, i).or_else(|| secrets::at_kind(kind, b, i)),
        };
        offer(kind, e);
    }
}

/// The kinds of `mask` with at least one candidate in `b`, each exactly as a scan for that
/// kind alone would find one (what `Scanner::any` with that one detector answers). A scan
/// for one kind walks the same positions as a scan that finds nothing (it only jumps after
/// a candidate), so this walks those positions once, never jumping, and tries there every
/// kind not found yet: a longer candidate of one kind cannot hide another, unlike
/// [`scan`], which keeps only the longest candidate at a position and skips past it. The
/// walk stops as soon as every kind is found. `first` gets, for each kind found, the
/// position the walk found it at: where a [`scan_from`] for kinds of `mask` may start.
pub(crate) fn present(b: &[u8], mut mask: Mask, first: &mut dyn FnMut(Kind, usize)) -> Mask {
    let mut found: Mask = 0;
    let mut st = State::default();
    let n = b.len();
    let mut i = 0usize;
    while i < n && mask != 0 {
        let c = at(b, i);
        if INERT[usize::from(c)] {
            i += 1;
            continue;
        }
        let m = FIRST[usize::from(c)] & mask & SECOND[usize::from(at(b, i + 1))];
        if m != 0 {
            let prev = at(b, i.wrapping_sub(1));
            if !is_word(prev) {
                let mut hit: Mask = 0;
                candidates_at(b, i, prev, m, &mut st, &mut |k: Kind, e: Option<usize>| {
                    if e.is_some_and(|e| e > i) && hit & k.bit() == 0 {
                        hit |= k.bit();
                        first(k, i);
                    }
                });
                found |= hit;
                mask &= !hit;
            }
        }
        if trigger(c, mask) {
            let (k, hit) = if c == b'@' {
                (Kind::Email, email_at(b, i).is_some())
            } else {
                (
                    Kind::PasswordAssignment,
                    secrets::assignment_at(b, i).is_some(),
                )
            };
            if hit {
                found |= k.bit();
                mask &= !k.bit();
                first(k, i);
            }
        }
        i += 1;
        if WORD[usize::from(c)] {
            i = skip_word(b, i);
        }
    }
    found
}

// ---------------------------------------------------------------- numbers

const MAX_GROUPS: usize = 8;

/// One digit group of a number-like run, e.g. `415` in `(415) 555-0132`.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    /// Digits start and end.
    ds: usize,
    de: usize,
    /// End including a closing parenthesis.
    oe: usize,
    paren: bool,
}

impl Group {
    fn len(&self) -> usize {
        self.de - self.ds
    }
}

/// A run of digit groups separated by single separators, parsed once at a token start
/// and shared by the card, SSN, IPv4 and phone classifiers.
#[derive(Debug, Default)]
struct Run {
    plus: bool,
    groups: [Group; MAX_GROUPS],
    /// `seps[k]` is the separator before group `k` (0 for none, after `)`).
    seps: [u8; MAX_GROUPS],
    len: usize,
}

/// Groups longer than this are never part of any numeric built-in.
const MAX_GROUP_DIGITS: usize = 19;

impl Run {
    /// Parses the run at `i` into `self` (reused across token starts so nothing is
    /// zeroed or copied per number); false when no digit group starts there.
    fn parse(&mut self, b: &[u8], i: usize) -> bool {
        let r = self;
        r.len = 0;
        r.plus = false;
        let mut p = i;
        if at(b, p) == b'+' {
            r.plus = true;
            p += 1;
        }
        let mut sep = 0u8;
        while r.len < MAX_GROUPS {
            let paren = at(b, p) == b'(';
            let q = if paren { p + 1 } else { p };
            let mut e = q;
            while at(b, e).is_ascii_digit() && e - q <= MAX_GROUP_DIGITS {
                e += 1;
            }
            if e == q || e - q > MAX_GROUP_DIGITS {
                break;
            }
            let oe = if paren {
                if at(b, e) != b')' {
                    break;
                }
                e + 1
            } else {
                e
            };
            if let (Some(g), Some(s)) = (r.groups.get_mut(r.len), r.seps.get_mut(r.len)) {
                *g = Group {
                    ds: q,
                    de: e,
                    oe,
                    paren,
                };
                *s = sep;
            }
            r.len += 1;
            let s = at(b, oe);
            let next = at(b, oe + 1);
            if matches!(s, b' ' | b'-' | b'.' | b'/') && (next.is_ascii_digit() || next == b'(') {
                sep = s;
                p = oe + 1;
            } else if paren && s.is_ascii_digit() {
                sep = 0;
                p = oe;
            } else {
                break;
            }
        }
        r.len > 0
    }

    fn group(&self, k: usize) -> Group {
        self.groups.get(k).copied().unwrap_or_default()
    }

    fn sep(&self, k: usize) -> u8 {
        self.seps.get(k).copied().unwrap_or(0)
    }

    /// Whether the first `k` groups may stand alone: either they are the whole run and
    /// no word byte follows, or the next group is a separate token (space or `/` apart).
    fn prefix_ok(&self, b: &[u8], k: usize) -> bool {
        if k == 0 || k > self.len {
            return false;
        }
        if k == self.len {
            let e = self.group(k - 1).oe;
            let nxt = at(b, e);
            !(is_word(nxt) || (nxt == b'.' && at(b, e + 1).is_ascii_digit()))
        } else {
            matches!(self.sep(k), b' ' | b'/')
        }
    }

    fn end(&self, k: usize) -> usize {
        self.group(k - 1).oe
    }

    fn any_paren(&self, k: usize) -> bool {
        (0..k).any(|j| self.group(j).paren)
    }

    fn digits(&self, k: usize) -> usize {
        (0..k).map(|j| self.group(j).len()).sum()
    }
}

fn card(b: &[u8], r: &Run) -> Option<usize> {
    if r.plus {
        return None;
    }
    for k in (1..=r.len.min(5)).rev() {
        if !r.prefix_ok(b, k) || r.any_paren(k) {
            continue;
        }
        let lens: [usize; 5] = core::array::from_fn(|j| if j < k { r.group(j).len() } else { 0 });
        let total: usize = lens.iter().sum();
        if !(13..=19).contains(&total) {
            continue;
        }
        if k > 1 {
            let s = r.sep(1);
            if !matches!(s, b' ' | b'-') || (2..k).any(|j| r.sep(j) != s) {
                continue;
            }
            let grouped = (lens[0] == 4 && (1..k - 1).all(|j| lens.get(j) == Some(&4)))
                && lens.get(k - 1).is_some_and(|&l| (1..=4).contains(&l));
            let amex = k == 3 && lens[0] == 4 && lens[1] == 6 && matches!(lens[2], 4 | 5);
            if !grouped && !amex {
                continue;
            }
        }
        let mut d = [0u8; 19];
        let mut n = 0;
        for j in 0..k {
            let g = r.group(j);
            for &c in b.get(g.ds..g.de).unwrap_or_default() {
                if let Some(slot) = d.get_mut(n) {
                    *slot = c;
                }
                n += 1;
            }
        }
        let d = d.get(..n)?;
        if luhn_digits(d) && known_iin(d) {
            return Some(r.end(k));
        }
    }
    None
}

/// A US taxpayer identifier written 3-2-4 with one kind of separator (`-` or space), its
/// parts accepted by `parts`. Bare 9-digit runs are never taken: too many order numbers
/// and timestamps look like them.
fn taxpayer_id(b: &[u8], r: &Run, parts: fn(u32, u32, u32) -> bool) -> Option<usize> {
    if r.plus || r.len < 3 || !r.prefix_ok(b, 3) || r.any_paren(3) {
        return None;
    }
    let (g0, g1, g2) = (r.group(0), r.group(1), r.group(2));
    if g0.len() != 3 || g1.len() != 2 || g2.len() != 4 {
        return None;
    }
    if r.sep(1) != r.sep(2) || !matches!(r.sep(1), b'-' | b' ') {
        return None;
    }
    let num = |g: Group| b.get(g.ds..g.de).and_then(number);
    parts(num(g0)?, num(g1)?, num(g2)?).then(|| r.end(3))
}

/// A dotted-quad octet: 1–3 digits, no leading zero, at most 255.
fn octet(d: &[u8]) -> bool {
    match d {
        [b'0'] => true,
        [b'0', ..] => false,
        _ => d.len() <= 3 && number(d).is_some_and(|v| v <= 255),
    }
}

fn ipv4(b: &[u8], r: &Run) -> Option<usize> {
    if r.plus || r.len < 4 || r.any_paren(4) || (1..4).any(|j| r.sep(j) != b'.') {
        return None;
    }
    if r.len > 4 && !matches!(r.sep(4), b' ' | b'/') {
        return None;
    }
    if !r.prefix_ok(b, 4) {
        return None;
    }
    let octets = (0..4).all(|j| {
        let g = r.group(j);
        b.get(g.ds..g.de).is_some_and(octet)
    });
    (octets && !after_version_word(b, r.group(0).ds)).then(|| r.end(4))
}

/// Whether the word just before `i` (across at most two spaces or `:`/`=`) names a
/// version, so `firmware 2.4.1.7` is not read as an address.
fn after_version_word(b: &[u8], i: usize) -> bool {
    let mut p = i;
    let mut gap = 0;
    while p > 0 && gap < 2 && matches!(at(b, p - 1), b' ' | b':' | b'=') {
        p -= 1;
        gap += 1;
    }
    let end = p;
    while p > 0 && end - p < 9 && at(b, p - 1).is_ascii_alphabetic() {
        p -= 1;
    }
    if p > 0 && is_word(at(b, p - 1)) {
        return false;
    }
    const WORDS: &[&[u8]] = &[
        b"version",
        b"ver",
        b"release",
        b"firmware",
        b"build",
        b"rev",
    ];
    b.get(p..end)
        .is_some_and(|w| WORDS.iter().any(|v| w.eq_ignore_ascii_case(v)))
}

/// The longest phone-shaped prefix of a run: E.164 with `+`, NANP, and trunk-`0`
/// national formats (UK, DE, FR, …).
fn phone(b: &[u8], r: &Run) -> Option<usize> {
    for k in (1..=r.len).rev() {
        if r.prefix_ok(b, k) && phone_shape(b, r, k) {
            return Some(r.end(k));
        }
    }
    None
}

fn phone_shape(b: &[u8], r: &Run, k: usize) -> bool {
    let digits = r.digits(k);
    let g = |j: usize| r.group(j);
    let first_digit = |j: usize| at(b, g(j).ds);
    let mut sep_buf = [0u8; MAX_GROUPS];
    let mut nseps = 0;
    for j in 1..k {
        if !(g(j - 1).paren || r.sep(j) == 0) {
            if let Some(slot) = sep_buf.get_mut(nseps) {
                *slot = r.sep(j);
            }
            nseps += 1;
        }
    }
    let non_paren_seps = sep_buf.get(..nseps).unwrap_or_default();
    let seps_same = non_paren_seps.windows(2).all(|w| w.first() == w.get(1));
    // `00` is the international call prefix written instead of `+` (`0044 20 …`).
    let intl00 = !r.plus
        && k > 1
        && (3..=5).contains(&g(0).len())
        && at(b, g(0).ds) == b'0'
        && at(b, g(0).ds + 1) == b'0'
        && at(b, g(0).ds + 2) != b'0';
    if r.plus || intl00 {
        // E.164: country code never starts with 0; 8–15 digits; a `(0)` trunk may appear.
        let trunk = (0..k)
            .filter(|&j| g(j).paren)
            .map(|j| g(j).len())
            .sum::<usize>();
        let counted = digits - usize::from(trunk == 1) - if intl00 { 2 } else { 0 };
        let cc_start = if intl00 { g(0).ds + 2 } else { g(0).ds };
        return at(b, cc_start) != b'0'
            && !g(0).paren
            && (8..=15).contains(&counted)
            && non_paren_seps
                .iter()
                .all(|&s| matches!(s, b' ' | b'-' | b'.'))
            && (k == 1 || g(0).len() <= if intl00 { 5 } else { 3 })
            && !(k == 4 && non_paren_seps.iter().all(|&s| s == b'.'));
    }
    // NANP: optional leading 1, area and exchange start 2–9.
    let nanp = |o: usize| -> bool {
        if k != o + 3 {
            return false;
        }
        let (a, x, s) = (g(o), g(o + 1), g(o + 2));
        if a.len() != 3 || x.len() != 3 || s.len() != 4 || x.paren || s.paren {
            return false;
        }
        if !(b'2'..=b'9').contains(&first_digit(o)) || !(b'2'..=b'9').contains(&first_digit(o + 1))
        {
            return false;
        }
        let s2 = r.sep(o + 2);
        if a.paren {
            matches!(r.sep(o + 1), 0 | b' ') && matches!(s2, b'-' | b' ' | b'.')
        } else {
            r.sep(o + 1) == s2 && matches!(s2, b'-' | b'.' | b' ')
        }
    };
    if nanp(0) {
        return true;
    }
    if k == 4
        && g(0).len() == 1
        && first_digit(0) == b'1'
        && !g(0).paren
        && matches!(r.sep(1), b'-' | b' ' | b'.')
        && nanp(1)
    {
        return true;
    }
    // Trunk-prefix national numbers: 0 then a non-zero digit, grouped.
    if k < 2 || first_digit(0) != b'0' || at(b, g(0).ds + 1) == b'0' {
        return false;
    }
    if !(9..=12).contains(&digits) || !seps_same || (1..k).any(|j| g(j).paren) {
        return false;
    }
    if !(2..=5).contains(&g(0).len()) || (1..k).any(|j| !(2..=8).contains(&g(j).len())) {
        return false;
    }
    match non_paren_seps.first().copied().unwrap_or(b' ') {
        // Dots only in the French pairs layout, so dates and versions stay out.
        b'.' => k == 5 && (0..5).all(|j| g(j).len() == 2),
        b'/' => k == 2,
        b' ' | b'-' => {
            // 3-2-4 is the SSN layout; leave it to that detector.
            !(k == 3 && g(0).len() == 3 && g(1).len() == 2 && g(2).len() == 4)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- email

const fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

const fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// [`is_local`] as a table: the look-back from every `@` reads it per byte.
static LOCAL: [bool; 256] = email_table(false);

/// Bytes of a domain label ([`is_label`]), as a table.
static LABEL: [bool; 256] = email_table(true);

const fn email_table(label: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        t[c] = if label {
            is_label(c as u8)
        } else {
            is_local(c as u8)
        };
        c += 1;
    }
    t
}

/// An email around the `@` at `at_pos`: local part found looking back (at most 64 bytes),
/// domain of at least two labels with an alphabetic TLD looking forward (at most 253).
/// A dense prompt has one every dozen bytes, so the walks read tables over slices.
pub(crate) fn email_at(b: &[u8], at_pos: usize) -> Option<(usize, usize)> {
    let head = b.get(..at_pos)?;
    let lim = at_pos.saturating_sub(64);
    let back = head
        .get(lim..)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|&&c| LOCAL[usize::from(c)])
        .count();
    let mut s = at_pos - back;
    if s == lim && s > 0 && head.get(s - 1).is_some_and(|&c| LOCAL[usize::from(c)]) {
        return None;
    }
    s += head
        .get(s..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&c| c == b'.')
        .count();
    if s == at_pos || head.last() == Some(&b'.') {
        return None;
    }
    let mut p = at_pos + 1;
    let mut labels = 0;
    let mut last: (usize, usize);
    loop {
        let ls = p;
        let label = b.get(ls..).unwrap_or_default();
        let n = label
            .iter()
            .take(64)
            .take_while(|&&c| LABEL[usize::from(c)])
            .count();
        p = ls + n;
        if n == 0 || label.first() == Some(&b'-') || at(b, p - 1) == b'-' || p - at_pos > 254 {
            return None;
        }
        labels += 1;
        last = (ls, p);
        if at(b, p) == b'.' && at(b, p + 1).is_ascii_alphanumeric() {
            p += 1;
        } else {
            break;
        }
    }
    let tld = b.get(last.0..last.1)?;
    if labels < 2 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    if is_word(at(b, p)) || at(b, p) == b'@' {
        return None;
    }
    Some((s, p))
}

// ---------------------------------------------------------------- ipv6

/// A dotted quad starting at `i` (for IPv6's embedded IPv4 form).
fn dotted_quad(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for k in 0..4 {
        if k > 0 {
            if at(b, p) != b'.' {
                return None;
            }
            p += 1;
        }
        let s = p;
        while at(b, p).is_ascii_digit() && p - s < 4 {
            p += 1;
        }
        if !octet(b.get(s..p)?) {
            return None;
        }
    }
    if at(b, p) == b'.' && at(b, p + 1).is_ascii_digit() {
        return None;
    }
    Some(p)
}

fn ipv6_at(b: &[u8], i: usize) -> Option<usize> {
    // Cheap reject for ordinary words: an address has a `:` within five bytes.
    if at(b, i) != b':' {
        let h = run_len(b, i, 4, |c| c.is_ascii_hexdigit());
        if !matches!(at(b, i + h), b':' | b'.') {
            return None;
        }
    }
    let mut p = i;
    let mut groups = 0usize;
    let mut double = false;
    let mut has_digit = false;
    let lead_double = at(b, p) == b':';
    if lead_double {
        if at(b, p + 1) != b':' {
            return None;
        }
        double = true;
        p += 2;
    }
    loop {
        let gs = p;
        while at(b, p).is_ascii_hexdigit() && p - gs < 5 {
            p += 1;
        }
        let glen = p - gs;
        if glen == 0 {
            break;
        }
        if glen > 4 && at(b, p).is_ascii_hexdigit() {
            return None;
        }
        if at(b, p) == b'.' && at(b, p + 1).is_ascii_digit() {
            // Embedded IPv4 in place of the last two groups (a `.` before anything
            // else ends the sentence, not the address).
            if groups > 6 || (!double && groups != 6) {
                return None;
            }
            p = dotted_quad(b, gs)?;
            groups += 2;
            has_digit = true;
            break;
        }
        if glen > 4 {
            return None;
        }
        groups += 1;
        has_digit |= b
            .get(gs..p)
            .is_some_and(|g| g.iter().any(u8::is_ascii_digit));
        if groups > 8 {
            return None;
        }
        if at(b, p) == b':' && at(b, p + 1) == b':' {
            if double {
                return None;
            }
            double = true;
            p += 2;
        } else if at(b, p) == b':' && at(b, p + 1).is_ascii_hexdigit() {
            p += 1;
        } else {
            break;
        }
    }
    let valid = if double {
        groups <= 7 && has_digit && (groups >= 2 || (lead_double && groups >= 1))
    } else {
        groups == 8
    };
    let nxt = at(b, p);
    (valid && !is_word(nxt) && nxt != b':' && !(nxt == b'.' && at(b, p + 1).is_ascii_digit()))
        .then_some(p)
}

// ---------------------------------------------------------------- iban

fn iban_at(b: &[u8], i: usize) -> Option<usize> {
    let (c0, c1) = (at(b, i), at(b, i + 1));
    if !c0.is_ascii_uppercase() || !c1.is_ascii_uppercase() {
        return None;
    }
    if !at(b, i + 2).is_ascii_digit() || !at(b, i + 3).is_ascii_digit() {
        return None;
    }
    let len = iban_length([c0, c1])?;
    let mut buf = [0u8; 34];
    let mut n = 0usize;
    let mut p = i;
    let spaced = at(b, i + 4) == b' ';
    while n < len {
        let c = at(b, p);
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            if let Some(slot) = buf.get_mut(n) {
                *slot = c;
            }
            n += 1;
            p += 1;
        } else if c == b' '
            && spaced
            && n.is_multiple_of(4)
            && n > 0
            && at(b, p + 1).is_ascii_alphanumeric()
        {
            p += 1;
        } else {
            return None;
        }
    }
    if is_word(at(b, p)) {
        return None;
    }
    iban_mod97(buf.get(..n)?).then_some(p)
}

// ---------------------------------------------------------------- secrets

fn starts(b: &[u8], i: usize, lit: &[u8]) -> bool {
    b.get(i..i + lit.len()) == Some(lit)
}

/// Length of the run of bytes satisfying `f` from `i`, looking at most `max + 1` bytes.
fn run_len(b: &[u8], i: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
    let mut p = i;
    while p - i <= max && f(at(b, p)) {
        p += 1;
    }
    p - i
}

fn aws_at(b: &[u8], i: usize) -> Option<usize> {
    let pre = b.get(i..i + 4)?;
    if !matches!(pre, b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA") {
        return None;
    }
    let n = run_len(b, i + 4, 16, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit()
    });
    (n == 16 && !is_word(at(b, i + 20))).then_some(i + 20)
}

fn github_at(b: &[u8], i: usize) -> Option<usize> {
    if starts(b, i, b"github_pat_") {
        let n = run_len(b, i + 11, 82, is_word);
        return (n == 82).then_some(i + 11 + 82);
    }
    let pre = b.get(i..i + 4)?;
    if !matches!(pre, b"ghp_" | b"gho_" | b"ghu_" | b"ghs_" | b"ghr_") {
        return None;
    }
    let n = run_len(b, i + 4, 255, |c| c.is_ascii_alphanumeric());
    ((36..=255).contains(&n) && !is_word(at(b, i + 4 + n))).then_some(i + 4 + n)
}

fn slack_at(b: &[u8], i: usize) -> Option<usize> {
    let pre = b.get(i..i + 5)?;
    if !matches!(
        pre,
        b"xoxb-" | b"xoxp-" | b"xoxa-" | b"xoxr-" | b"xoxs-" | b"xapp-"
    ) {
        return None;
    }
    let s = i + 5;
    let mut n = run_len(b, s, 255, |c| c.is_ascii_alphanumeric() || c == b'-');
    if n > 255 {
        return None;
    }
    while n > 0 && at(b, s + n - 1) == b'-' {
        n -= 1;
    }
    let body = b.get(s..s + n)?;
    let first = body.split(|&c| c == b'-').next().unwrap_or_default();
    let dashes = body.iter().filter(|&&c| c == b'-').count();
    let ok = n >= 20
        && dashes >= 2
        && !first.is_empty()
        && first.iter().all(u8::is_ascii_digit)
        && !is_word(at(b, s + n));
    ok.then_some(s + n)
}

fn openai_at(b: &[u8], i: usize) -> Option<usize> {
    if !starts(b, i, b"sk-") {
        return None;
    }
    let s = i + 3;
    let mut n = run_len(b, s, 512, is_b64url);
    if n > 512 {
        return None;
    }
    while n > 0 && matches!(at(b, s + n - 1), b'-' | b'_') {
        n -= 1;
    }
    let body = b.get(s..s + n)?;
    let random_segment = body.split(|&c| c == b'-' || c == b'_').any(|seg| {
        seg.len() >= 16
            && seg.iter().any(u8::is_ascii_digit)
            && seg.iter().any(u8::is_ascii_alphabetic)
    });
    (n >= 20 && random_segment && !is_word(at(b, s + n))).then_some(s + n)
}

/// Whether a base64url segment decodes to something shaped like a JSON object:
/// starts with `{"` and its last non-space byte is `}`.
fn b64_json_object(seg: &[u8]) -> bool {
    if seg.len() % 4 == 1 || !seg.starts_with(b"eyJ") {
        return false;
    }
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut last = 0u8;
    for &c in seg {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = ((acc >> bits) & 0xff) as u8;
            if !byte.is_ascii_whitespace() {
                last = byte;
            }
        }
    }
    last == b'}'
}

/// Segment bounds: real headers are a few hundred characters, RSA-4096 signatures 683.
const JWT_HEADER_MAX: usize = 1024;
const JWT_PAYLOAD_MAX: usize = 16384;
const JWT_SIG_MAX: usize = 1024;

/// Bytes after a match's end that a scanner reads to accept it (`.` then a digit).
pub(crate) const LOOKAHEAD: usize = 2;

/// An upper bound on the length of a match of `kind`, or `None` when unbounded (a
/// private key block runs to its END line).
pub(crate) const fn max_len(kind: Kind) -> Option<usize> {
    Some(match kind {
        Kind::CreditCard => 40,
        Kind::Iban => 42,
        Kind::UsItin | Kind::UsSsn => 11,
        Kind::Ipv4 => 15,
        Kind::Ipv6 => 45,
        Kind::Email => 64 + 1 + 255,
        Kind::AwsAccessKey => 20,
        Kind::GithubToken => 4 + 255,
        Kind::SlackToken => 5 + 255,
        Kind::OpenaiKey => 3 + 512,
        Kind::Jwt => JWT_HEADER_MAX + JWT_PAYLOAD_MAX + JWT_SIG_MAX + 2,
        Kind::PrivateKey => return None,
        Kind::UsAbaRouting | Kind::UsPassport | Kind::UsEin | Kind::AuTfn | Kind::NlBsn => 12,
        Kind::UsNpi | Kind::UkNhs | Kind::UsMbi | Kind::UkNino => 14,
        Kind::DeTaxId | Kind::PlPesel | Kind::SePersonnummer | Kind::FiHetu => 14,
        Kind::BeNationalNumber | Kind::EsDni | Kind::InPan | Kind::SgNric => 15,
        Kind::UkBankAccount | Kind::InAadhaar | Kind::CaSin | Kind::AuMedicare => 17,
        Kind::ItCodiceFiscale | Kind::EuVat => 16,
        Kind::FrNir => 21,
        Kind::PassportMrz => 44,
        Kind::BtcAddress => ids::BECH32_MAX,
        Kind::EthAddress => 42,
        Kind::MacAddress => 17,
        Kind::AnthropicKey => 7 + secrets::ANTHROPIC_BODY_MAX,
        Kind::StripeKey => 8 + secrets::STRIPE_BODY_MAX,
        Kind::GoogleApiKey => 39,
        Kind::GcpServiceAccount => secrets::GCP_MAX,
        Kind::AzureStorageKey => secrets::AZURE_MAX,
        Kind::HuggingfaceToken => 3 + 34,
        Kind::NpmToken => 4 + 36,
        Kind::PypiToken => secrets::PYPI_MAX,
        Kind::TwilioKey => 34,
        Kind::SendgridKey => 3 + 22 + 1 + 43,
        Kind::DatabaseUrl => secrets::DB_URL_MAX,
        Kind::PasswordAssignment => secrets::ASSIGNED_VALUE_MAX,
        // `+`, up to 8 groups of digits with separators and parentheses.
        Kind::Phone => 48,
    })
}

/// Whether a value of `kind` may contain whitespace (numbers written in spaced groups,
/// quoted assigned secrets); the others end at the first whitespace byte.
pub(crate) const fn may_contain_space(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::CreditCard
            | Kind::Iban
            | Kind::UsItin
            | Kind::UsSsn
            | Kind::Phone
            | Kind::UkNhs
            | Kind::AuTfn
            | Kind::DeTaxId
            | Kind::FrNir
            | Kind::InAadhaar
            | Kind::CaSin
            | Kind::AuMedicare
            | Kind::UkNino
            | Kind::UkBankAccount
            | Kind::PasswordAssignment
            | Kind::PrivateKey
    )
}

/// The most bytes before a match's start any scanner reads to accept it: a context
/// keyword window, or a `password=` key (64 bytes, a quote and two spaces) plus the
/// spaces and quote between `=` and the value.
pub(crate) const CONTEXT_MAX: usize = 96;

/// Longest `"type": "service_account"` header the service-account scanner accepts.
pub(crate) const GCP_HEADER_MAX: usize = secrets::GCP_HEADER_MAX;

/// See [`super::unfinished_block`].
pub(crate) fn gcp_open_start(b: &[u8]) -> Option<usize> {
    secrets::gcp_open_start(b)
}

/// The longest `-----BEGIN <label>-----` header the private key scanner accepts.
pub(crate) const PRIVATE_KEY_HEADER_MAX: usize = 11 + 64 + 5;

/// A JWT at `i`, and (for the caller's rejection cache) where the first segment's
/// base64url run ends.
fn jwt_at(b: &[u8], i: usize) -> (Option<usize>, usize) {
    if !starts(b, i, b"eyJ") {
        return (None, i);
    }
    let n1 = run_len(b, i, JWT_HEADER_MAX, is_b64url);
    let run_end = i + n1;
    let found = (|| {
        if n1 > JWT_HEADER_MAX || at(b, i + n1) != b'.' {
            return None;
        }
        let s2 = i + n1 + 1;
        let n2 = run_len(b, s2, JWT_PAYLOAD_MAX, is_b64url);
        if n2 > JWT_PAYLOAD_MAX || at(b, s2 + n2) != b'.' {
            return None;
        }
        let s3 = s2 + n2 + 1;
        let n3 = run_len(b, s3, JWT_SIG_MAX, is_b64url);
        if !(8..=JWT_SIG_MAX).contains(&n3) || is_word(at(b, s3 + n3)) {
            return None;
        }
        (b64_json_object(b.get(i..i + n1)?) && b64_json_object(b.get(s2..s2 + n2)?))
            .then_some(s3 + n3)
    })();
    (found, run_end)
}

/// First occurrence of `needle` in `b` at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let hay = b.get(from..)?;
    let mut k = 0;
    while let Some(off) = hay.get(k..)?.iter().position(|&c| c == first) {
        let p = k + off;
        if hay.get(p..p + needle.len()) == Some(needle) {
            return Some(from + p);
        }
        k = p + 1;
    }
    None
}

fn find_end(b: &[u8], from: usize, st: &mut State) -> Option<usize> {
    if let Some((searched, res)) = st.end_cache
        && searched <= from
        && res.is_none_or(|r| r >= from)
    {
        return res;
    }
    let res = find(b, from, b"-----END ");
    st.end_cache = Some((from, res));
    res
}

fn private_key_at(b: &[u8], i: usize, st: &mut State) -> Option<usize> {
    if !starts(b, i, b"-----BEGIN ") {
        return None;
    }
    let ls = i + 11;
    let mut p = ls;
    while p - ls < 64 && (at(b, p).is_ascii_uppercase() || matches!(at(b, p), b' ' | b'0'..=b'9')) {
        p += 1;
    }
    let label = b.get(ls..p)?;
    if !starts(b, p, b"-----") || find(label, 0, b"PRIVATE KEY").is_none() {
        return None;
    }
    let header_end = p + 5;
    if let Some(e) = find_end(b, header_end, st)
        && b.get(e + 9..e + 9 + label.len()) == Some(label)
        && starts(b, e + 9 + label.len(), b"-----")
    {
        return Some(e + 9 + label.len() + 5);
    }
    // No matching END (truncated paste): the header and the base64 lines under it.
    let mut end = header_end;
    let mut q = header_end;
    loop {
        // Real line breaks, or `\n` escapes when the text is raw JSON.
        loop {
            if matches!(at(b, q), b'\r' | b'\n') {
                q += 1;
            } else if at(b, q) == b'\\' && matches!(at(b, q + 1), b'r' | b'n') {
                q += 2;
            } else {
                break;
            }
        }
        let n = run_len(b, q, usize::MAX - 1, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
        });
        // A body line: a full-width base64 line, or a shorter one ending its line.
        let line_end = matches!(at(b, q + n), b'\r' | b'\n' | b'\\' | b'"') || q + n >= b.len();
        if n == 0 || !(line_end || (n >= 16 && !is_word(at(b, q + n)))) {
            break;
        }
        q += n;
        end = q;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The look-back and look-forward of `email_at` as first written (byte by byte through
    /// `at`), kept as the reference the table-driven version must agree with.
    fn email_at_reference(b: &[u8], at_pos: usize) -> Option<(usize, usize)> {
        let lim = at_pos.saturating_sub(64);
        let mut s = at_pos;
        while s > lim && is_local(at(b, s - 1)) {
            s -= 1;
        }
        if s == lim && s > 0 && is_local(at(b, s - 1)) {
            return None;
        }
        while s < at_pos && at(b, s) == b'.' {
            s += 1;
        }
        if s == at_pos || at(b, at_pos - 1) == b'.' {
            return None;
        }
        let mut p = at_pos + 1;
        let mut labels = 0;
        let mut last: (usize, usize);
        loop {
            let ls = p;
            while (at(b, p).is_ascii_alphanumeric() || at(b, p) == b'-') && p - ls < 64 {
                p += 1;
            }
            if p == ls || at(b, ls) == b'-' || at(b, p - 1) == b'-' || p - at_pos > 254 {
                return None;
            }
            labels += 1;
            last = (ls, p);
            if at(b, p) == b'.' && at(b, p + 1).is_ascii_alphanumeric() {
                p += 1;
            } else {
                break;
            }
        }
        let tld = b.get(last.0..last.1)?;
        if labels < 2 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        if is_word(at(b, p)) || at(b, p) == b'@' {
            return None;
        }
        Some((s, p))
    }

    /// The table-driven `email_at` finds exactly what the byte-by-byte one found, at every
    /// `@` of texts built around it: local parts and labels of every length up to past
    /// their 64-byte limits (and domains past 254), drawn from the bytes that matter
    /// (label and local-part bytes, dots, dashes, `@`, spaces, non-ASCII).
    #[test]
    fn email_at_agrees_with_its_byte_by_byte_reference() {
        const NOISE: &[u8] = b"ab1Z.-_+%@ \xc3";
        const LOCAL_BYTES: &[u8] = b"aZ9._%+-";
        const LABEL_BYTES: &[u8] = b"aZ9-";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut checked = 0usize;
        for _ in 0..6000 {
            let mut text: Vec<u8> = Vec::new();
            for _ in 0..next(4) {
                text.push(NOISE[next(NOISE.len())]);
            }
            for _ in 0..next(80) {
                text.push(LOCAL_BYTES[next(LOCAL_BYTES.len())]);
            }
            text.push(b'@');
            for label in 0..1 + next(6) {
                if label > 0 {
                    text.push(b'.');
                }
                let len = if next(4) == 0 {
                    60 + next(10)
                } else {
                    next(12)
                };
                for _ in 0..len {
                    text.push(LABEL_BYTES[next(LABEL_BYTES.len())]);
                }
            }
            for _ in 0..next(4) {
                text.push(NOISE[next(NOISE.len())]);
            }
            for (i, &c) in text.iter().enumerate() {
                if c == b'@' {
                    assert_eq!(
                        email_at(&text, i),
                        email_at_reference(&text, i),
                        "at {i} of {:?}",
                        String::from_utf8_lossy(&text)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "only {checked} positions checked");
        for text in [
            &b"jane.doe@example.com"[..],
            b"a@b.co",
            b".a@b.co",
            b"a.@b.co",
            b"@b.co",
        ] {
            for i in 0..text.len() {
                assert_eq!(email_at(text, i), email_at_reference(text, i));
            }
        }
        assert_eq!(email_at(b"jane.doe@example.com", 8), Some((0, 20)));
    }

    /// `skip_word` ends where the plain byte loop ends: at the first non-word byte from
    /// `i`, or the end, for words that cross the eight-byte chunks at every offset, with
    /// uppercase letters, digits, `_`, non-ASCII bytes and `{`/`` ` `` (the bytes next to
    /// the lowercase range) inside and after them.
    #[test]
    fn skip_word_stops_where_the_byte_loop_stops() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| !WORD[usize::from(b[j])])
                .unwrap_or(b.len())
        };
        let alphabet: &[u8] = b"abcxyzAZ09_ `{@.-\xc3\xa9\xff\x7f";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut checked = 0usize;
        for len in 0..40usize {
            for _ in 0..200 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly lowercase letters, as prose is.
                        if seed.is_multiple_of(3) {
                            alphabet[(seed >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + ((seed >> 16) % 26) as u8
                        }
                    })
                    .collect();
                for i in 0..=len {
                    assert_eq!(skip_word(&b, i), naive(&b, i), "{b:?} from {i}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000);
    }
}
