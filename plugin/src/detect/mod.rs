//! Built-in and custom detectors of personal data and secrets.
//!
//! A [`Scanner`] is built once per VM from the policy's detector list and then answers
//! "which detected values are in this text" for any subset of those detectors. Built-in
//! detectors are hand-written linear scanners run together in one pass over the bytes (no
//! regex and no DFA tables in the artifact); custom detectors are regex-automata dense
//! DFAs compiled by `writ build` and only deserialized here, so the engine never compiles
//! a regex. Every search is linear in the text (no backtracking).

mod builtin;
mod checksum;
mod normalize;
mod validate;

use std::fmt;

use regex_automata::dfa::Automaton;
use regex_automata::dfa::dense::DFA;
use regex_automata::dfa::regex::Regex;
use regex_automata::{Anchored, Input};

use crate::ir::{Detector, DetectorClass, DetectorKind};
use builtin::{KINDS, Kind, Mask};

pub use normalize::EXPANSION;
pub use validate::{
    VALIDATORS, iban_compact, iban_mod97, itin_parts, known_iin, luhn_digits, ssn_parts,
    taxpayer_id_parts,
};

/// Shortcuts a [`Scanner::scan_with`] of one text may take, from what a
/// [`Scanner::present`] walk of the same text learnt. The default takes none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanHint {
    /// The built-ins' walk of the text as written may start at this byte: the smallest
    /// start `present` reported among the wanted detectors (past the end when it
    /// reported none of them). Up to its first candidate a scan visits the same
    /// positions as the `present` walk, which found nothing of them before there.
    pub from: usize,
    /// The text has no folded view and no decoded run ([`normalize`]), so there is no
    /// disguised form to look into.
    pub plain: bool,
}

/// One detected value: `text[start..end]` was found by the policy's detector number
/// `detector` (its index in `Policy::detectors`). Bounds are always char boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// Index of the detector in the policy's detector list.
    pub detector: u16,
    /// Byte offset of the first byte of the value.
    pub start: usize,
    /// Byte offset just past the value.
    pub end: usize,
}

/// Why a policy's detector list cannot be turned into a [`Scanner`]. Each is a build
/// defect (the compiler checks the same things), reported instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectError {
    /// A built-in detector name the engine does not know.
    UnknownBuiltin(String),
    /// A custom detector names a validator the engine does not have.
    UnknownValidator {
        /// The custom detector's name.
        detector: String,
        /// The validator it names.
        validator: String,
    },
    /// A custom detector's serialized DFA failed to deserialize.
    BadDfa {
        /// The custom detector's name.
        detector: String,
        /// regex-automata's deserialization error.
        reason: String,
    },
    /// More detectors than a `u16` id can address.
    TooManyDetectors(usize),
}

impl fmt::Display for DetectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectError::UnknownBuiltin(n) => write!(f, "unknown built-in detector `{n}`"),
            DetectError::UnknownValidator {
                detector,
                validator,
            } => write!(
                f,
                "detector `{detector}` names unknown validator `{validator}`"
            ),
            DetectError::BadDfa { detector, reason } => {
                write!(
                    f,
                    "detector `{detector}` has an unusable compiled pattern: {reason}"
                )
            }
            DetectError::TooManyDetectors(n) => write!(f, "{n} detectors exceed the limit"),
        }
    }
}

impl std::error::Error for DetectError {}

/// One built-in detector as authors and the docs see it. The registry ([`builtins`]) is
/// the single source of truth: the compiler resolves names and classes from it, and the
/// detector table in `docs/detectors.md` is generated from it.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The language name (`email`, `uk_nino`, …).
    pub name: &'static str,
    /// `pii` or `secret`: what `has pii` and `has secret` stand for.
    pub class: DetectorClass,
    /// Where the format is issued (`US`, `EU`, … or `global`), for the docs.
    pub region: &'static str,
    /// The groups the detector belongs to besides its class (`pii.eu`, `government_id`, …).
    pub groups: &'static [&'static str],
    /// What is found, in a few words.
    pub what: &'static str,
    /// How a candidate is confirmed (checksum, format rules, context keyword).
    pub validator: &'static str,
    kind: Kind,
}

/// The built-in detectors, grouped by region (the order of the docs). Tie-break priority
/// between built-ins is their kind order, not this order.
pub fn builtins() -> &'static [Builtin] {
    BUILTINS
}

/// The classes and groups a policy can name after `has` (`has pii.eu`), with what each
/// stands for. `pii` and `secret` also cover the policy's own detectors of that class;
/// the groups cover built-ins only.
pub const CLASSES: &[(&str, &str)] = &[
    ("pii", "every personal-data detector, built-in or declared"),
    ("secret", "every credential detector, built-in or declared"),
    ("pii.us", "United States identifiers"),
    ("pii.uk", "United Kingdom identifiers"),
    ("pii.eu", "European Union identifiers"),
    ("pii.in", "India identifiers"),
    ("pii.ca", "Canada identifiers"),
    ("pii.au", "Australia identifiers"),
    ("pii.sg", "Singapore identifiers"),
    ("government_id", "national, tax and travel document numbers"),
    (
        "financial",
        "cards, bank accounts and routing numbers, VAT numbers",
    ),
    ("health", "health-service and insurance numbers"),
    ("crypto", "cryptocurrency wallet addresses"),
    ("network", "IP and MAC addresses"),
    ("contact", "e-mail addresses and phone numbers"),
];

/// The built-in detector names a class or group stands for, in registry order, or
/// `None` when `class` is not one of [`CLASSES`].
pub fn class_members(class: &str) -> Option<Vec<&'static str>> {
    if !CLASSES.iter().any(|(c, _)| *c == class) {
        return None;
    }
    Some(
        BUILTINS
            .iter()
            .filter(|b| match class {
                "pii" => b.class == DetectorClass::Pii,
                "secret" => b.class == DetectorClass::Secret,
                g => b.groups.contains(&g),
            })
            .map(|b| b.name)
            .collect(),
    )
}

const fn pii(
    name: &'static str,
    region: &'static str,
    groups: &'static [&'static str],
    what: &'static str,
    validator: &'static str,
    kind: Kind,
) -> Builtin {
    Builtin {
        name,
        class: DetectorClass::Pii,
        region,
        groups,
        what,
        validator,
        kind,
    }
}

const fn secret(
    name: &'static str,
    what: &'static str,
    validator: &'static str,
    kind: Kind,
) -> Builtin {
    Builtin {
        name,
        class: DetectorClass::Secret,
        region: "global",
        groups: &[],
        what,
        validator,
        kind,
    }
}

const US: &[&str] = &["pii.us", "government_id"];
const UK: &[&str] = &["pii.uk", "government_id"];
const EU: &[&str] = &["pii.eu", "government_id"];

const BUILTINS: &[Builtin] = &[
    pii(
        "email",
        "global",
        &["contact"],
        "e-mail address",
        "local part and a domain of two or more labels with an alphabetic TLD",
        Kind::Email,
    ),
    pii(
        "phone",
        "global",
        &["contact"],
        "phone number",
        "E.164 with `+` or `00`, NANP, trunk-`0` national layouts (heuristic)",
        Kind::Phone,
    ),
    pii(
        "credit_card",
        "global",
        &["financial"],
        "payment card number",
        "Luhn and a card network's IIN prefix and length",
        Kind::CreditCard,
    ),
    pii(
        "iban",
        "global",
        &["financial"],
        "IBAN",
        "country length and ISO 13616 mod 97",
        Kind::Iban,
    ),
    pii(
        "ipv4",
        "global",
        &["network"],
        "IPv4 address",
        "four octets ≤ 255, not after a version word",
        Kind::Ipv4,
    ),
    pii(
        "ipv6",
        "global",
        &["network"],
        "IPv6 address",
        "RFC 4291 text forms",
        Kind::Ipv6,
    ),
    pii(
        "mac_address",
        "global",
        &["network"],
        "MAC address",
        "six hex pairs (`:`/`-`) or three quads (`.`); not all-zero or broadcast; `:` form needs a hex letter",
        Kind::MacAddress,
    ),
    pii(
        "passport_mrz",
        "global",
        &["government_id"],
        "passport machine-readable zone (TD3 line 2)",
        "ICAO 9303 7-3-1 check digits on number, dates, optional data and composite",
        Kind::PassportMrz,
    ),
    pii(
        "btc_address",
        "global",
        &["crypto", "financial"],
        "Bitcoin address",
        "base58check (double SHA-256) for `1…`/`3…`; bech32 (v0) / bech32m (v1+) for `bc1…`",
        Kind::BtcAddress,
    ),
    pii(
        "eth_address",
        "global",
        &["crypto", "financial"],
        "Ethereum address",
        "`0x` + 40 hex; EIP-55 (Keccak-256) checksum when mixed case",
        Kind::EthAddress,
    ),
    pii(
        "us_ssn",
        "US",
        US,
        "Social Security number",
        "3-2-4 with `-` or space (SSN, ITIN, ATIN): not area 000/666, group 00, serial 0000; bare 9-digit runs are not taken",
        Kind::UsSsn,
    ),
    pii(
        "us_itin",
        "US",
        US,
        "Individual Taxpayer Identification Number",
        "area 9xx, group 50–65, 70–88, 90–92 or 94–99; reported instead of `us_ssn` when both are on",
        Kind::UsItin,
    ),
    pii(
        "us_ein",
        "US",
        &["pii.us", "government_id", "financial"],
        "Employer Identification Number",
        "`NN-NNNNNNN` with an IRS campus prefix",
        Kind::UsEin,
    ),
    pii(
        "us_passport",
        "US",
        US,
        "US passport number",
        "9 digits or a letter and 8 digits, after the word `passport`",
        Kind::UsPassport,
    ),
    pii(
        "us_aba_routing",
        "US",
        &["pii.us", "financial"],
        "ABA routing number",
        "3-7-1 checksum and Federal Reserve prefix, after `routing`/`ABA`/`RTN`/`ACH`/`transit`",
        Kind::UsAbaRouting,
    ),
    pii(
        "us_npi",
        "US",
        &["pii.us", "health"],
        "National Provider Identifier",
        "Luhn over `80840` + 10 digits, after `NPI`",
        Kind::UsNpi,
    ),
    pii(
        "us_mbi",
        "US",
        &["pii.us", "health"],
        "Medicare Beneficiary Identifier",
        "CMS position rules (11 characters, optional 4-3-4 dashes)",
        Kind::UsMbi,
    ),
    pii(
        "uk_nino",
        "UK",
        UK,
        "National Insurance number",
        "HMRC prefix rules and suffix A–D",
        Kind::UkNino,
    ),
    pii(
        "uk_nhs",
        "UK",
        &["pii.uk", "health"],
        "NHS number",
        "mod 11, after `NHS`",
        Kind::UkNhs,
    ),
    pii(
        "uk_bank_account",
        "UK",
        &["pii.uk", "financial"],
        "sort code with account number",
        "`NN-NN-NN NNNNNNNN` layout (no public checksum tables)",
        Kind::UkBankAccount,
    ),
    pii(
        "de_tax_id",
        "EU",
        EU,
        "German tax id (Steuer-IdNr)",
        "ISO 7064 MOD 11,10 and the digit-repetition rule, after `Steuer-ID`/`IdNr`/`TIN`/…",
        Kind::DeTaxId,
    ),
    pii(
        "fr_nir",
        "EU",
        EU,
        "French social security number (NIR)",
        "sex, month, key = 97 − (number mod 97); Corsica not handled",
        Kind::FrNir,
    ),
    pii(
        "es_dni",
        "EU",
        EU,
        "Spanish DNI / NIE",
        "check letter (number mod 23)",
        Kind::EsDni,
    ),
    pii(
        "it_codice_fiscale",
        "EU",
        EU,
        "Italian codice fiscale",
        "layout with omocodia letters, month letter, odd/even check character",
        Kind::ItCodiceFiscale,
    ),
    pii(
        "nl_bsn",
        "EU",
        EU,
        "Dutch BSN",
        "11-proof, after `BSN`",
        Kind::NlBsn,
    ),
    pii(
        "pl_pesel",
        "EU",
        EU,
        "Polish PESEL",
        "birth date with century in the month, weights 1-3-7-9, after `PESEL`",
        Kind::PlPesel,
    ),
    pii(
        "se_personnummer",
        "EU",
        EU,
        "Swedish personnummer",
        "`YYMMDD-NNNN` or `YYYYMMDD-NNNN`: date (day + 60 allowed) and Luhn",
        Kind::SePersonnummer,
    ),
    pii(
        "fi_hetu",
        "EU",
        EU,
        "Finnish HETU",
        "date, century sign, individual number, mod 31 check character",
        Kind::FiHetu,
    ),
    pii(
        "be_national_number",
        "EU",
        EU,
        "Belgian national number",
        "`YY.MM.DD-NNN.CC`: mod 97 (with the 2000s variant)",
        Kind::BeNationalNumber,
    ),
    pii(
        "eu_vat",
        "EU",
        &["pii.eu", "financial"],
        "EU VAT number",
        "member-state prefix and national format; checksums for AT, BE, DE, DK, FI, FR, IT, NL, PL, SE",
        Kind::EuVat,
    ),
    pii(
        "in_aadhaar",
        "IN",
        &["pii.in", "government_id"],
        "Aadhaar number",
        "Verhoeff, first digit 2–9; `NNNN NNNN NNNN`, or 12 bare digits after `Aadhaar`/`UID`",
        Kind::InAadhaar,
    ),
    pii(
        "in_pan",
        "IN",
        &["pii.in", "government_id"],
        "Permanent Account Number",
        "`AAAAA9999A` with a holder-type fourth letter",
        Kind::InPan,
    ),
    pii(
        "ca_sin",
        "CA",
        &["pii.ca", "government_id"],
        "Social Insurance Number",
        "Luhn, first digit not 0/8; `NNN NNN NNN`, or 9 bare digits after `SIN`",
        Kind::CaSin,
    ),
    pii(
        "au_tfn",
        "AU",
        &["pii.au", "government_id"],
        "Tax File Number",
        "weights mod 11, after `TFN`/`tax file`",
        Kind::AuTfn,
    ),
    pii(
        "au_medicare",
        "AU",
        &["pii.au", "health"],
        "Medicare card number",
        "weights 1-3-7-9 mod 10; `NNNN NNNNN N`, or bare after `Medicare`",
        Kind::AuMedicare,
    ),
    pii(
        "sg_nric",
        "SG",
        &["pii.sg", "government_id"],
        "NRIC / FIN",
        "weights and the series' check-letter table (S, T, F, G)",
        Kind::SgNric,
    ),
    secret(
        "aws_access_key",
        "AWS access key id",
        "`AKIA`/`ASIA`/`ABIA`/`ACCA` + 16",
        Kind::AwsAccessKey,
    ),
    secret(
        "github_token",
        "GitHub token",
        "`ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36–255, or `github_pat_` + 82",
        Kind::GithubToken,
    ),
    secret(
        "slack_token",
        "Slack token",
        "`xox?-`/`xapp-` with numeric first segment",
        Kind::SlackToken,
    ),
    secret(
        "openai_key",
        "OpenAI API key",
        "`sk-` with a random-looking segment",
        Kind::OpenaiKey,
    ),
    secret(
        "anthropic_key",
        "Anthropic API key",
        "`sk-ant-` + 32–256 base64url",
        Kind::AnthropicKey,
    ),
    secret(
        "stripe_key",
        "Stripe secret or restricted key",
        "`sk_`/`rk_` + `live_`/`test_` + 24+",
        Kind::StripeKey,
    ),
    secret(
        "google_api_key",
        "Google API key",
        "`AIza` + 35 base64url",
        Kind::GoogleApiKey,
    ),
    secret(
        "gcp_service_account",
        "Google Cloud service-account key file",
        "`\"type\": \"service_account\"` through the `\"private_key\"` PEM value",
        Kind::GcpServiceAccount,
    ),
    secret(
        "azure_storage_key",
        "Azure storage account key or connection string",
        "`AccountKey=` + 86 base64 + `==`, or the whole `DefaultEndpointsProtocol=…` string",
        Kind::AzureStorageKey,
    ),
    secret(
        "huggingface_token",
        "Hugging Face token",
        "`hf_` + 34 mixed-case alphanumerics",
        Kind::HuggingfaceToken,
    ),
    secret(
        "npm_token",
        "npm access token",
        "`npm_` + 36 alphanumerics",
        Kind::NpmToken,
    ),
    secret(
        "pypi_token",
        "PyPI API token",
        "`pypi-AgEIcHlwaS5vcmc` + 50+ base64url",
        Kind::PypiToken,
    ),
    secret(
        "twilio_key",
        "Twilio API key or account SID",
        "`SK`/`AC` + 32 lowercase hex",
        Kind::TwilioKey,
    ),
    secret(
        "sendgrid_key",
        "SendGrid API key",
        "`SG.` + 22 + `.` + 43 base64url",
        Kind::SendgridKey,
    ),
    secret(
        "database_url",
        "database URL with a password",
        "postgres, mysql, mariadb, mongodb(+srv), redis(s), amqp(s) with `user:password@`",
        Kind::DatabaseUrl,
    ),
    secret(
        "password_assignment",
        "assigned password or secret",
        "value of `password=`, `secret:`, `DB_PASSWORD=`, `\"api_key\": \"…\"`; not placeholders",
        Kind::PasswordAssignment,
    ),
    secret(
        "jwt",
        "JSON Web Token",
        "three base64url segments, header and payload JSON objects",
        Kind::Jwt,
    ),
    secret(
        "private_key",
        "PEM private key block",
        "`-----BEGIN … PRIVATE KEY-----` to its END line (or the body of a truncated paste)",
        Kind::PrivateKey,
    ),
];

fn builtin_kind(name: &str) -> Option<Kind> {
    BUILTINS.iter().find(|b| b.name == name).map(|b| b.kind)
}

/// How a streaming rewriter must hold back text for a built-in detector, derived from the
/// scanner's own bounds: `span` is the number of trailing bytes to hold for values that
/// may contain whitespace (0 for values that never do, which the rewriter's cut after
/// whitespace already keeps whole), `context` the bytes before a value the scanner reads
/// (context keywords, `password=` keys), `block` whether an open service-account or key
/// block must be held to its end. `None` for a name that is not a built-in.
pub fn stream_hold(name: &str) -> Option<StreamHold> {
    let kind = builtin_kind(name)?;
    let spaced = builtin::may_contain_space(kind);
    let span = if spaced {
        builtin::max_len(kind).map_or(0, |l| (l + builtin::LOOKAHEAD) * EXPANSION)
    } else if kind == Kind::GcpServiceAccount {
        (builtin::GCP_HEADER_MAX + builtin::LOOKAHEAD) * EXPANSION
    } else {
        0
    };
    Some(StreamHold {
        span,
        context: builtin::CONTEXT_MAX,
        block: kind == Kind::GcpServiceAccount,
    })
}

/// See [`stream_hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHold {
    /// Trailing bytes to hold for values with whitespace.
    pub span: usize,
    /// Bytes before a value that decide whether it matches.
    pub context: usize,
    /// Hold an open service-account block (see [`unfinished_block`]).
    pub block: bool,
}

/// For streaming: the start of the last service-account block (`"type":
/// "service_account"`) in `text` that has no complete `"private_key"` value yet and
/// could still get one, so a rewriter holds it back instead of emitting half a key file.
pub fn unfinished_block(text: &str) -> Option<usize> {
    builtin::gcp_open_start(text.as_bytes())
}

/// The placeholder a redaction writes in place of a value: the detector name upper-cased
/// in brackets (`email` → `[EMAIL]`), readable by people and models alike.
pub fn mask(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('[');
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_uppercase());
        } else {
            s.push('_');
        }
    }
    s.push(']');
    s
}

/// Whether `name` can be used as a custom detector's validator: a checksum from
/// [`VALIDATORS`] or any built-in detector name.
pub fn is_validator(name: &str) -> bool {
    VALIDATORS.contains(&name) || builtin_kind(name).is_some()
}

/// Whether the whole of `value` passes the named validator: `luhn` (digits with optional
/// spaces or dashes), `iban` (country, length and mod 97), `mod97` (the checksum alone),
/// `ssn` (taxpayer-id ranges with separators, issued SSN ranges for bare digits), or a built-in detector name, in which case `value` must be
/// exactly one match of that detector. Unknown names reject, so a typo fails closed.
pub fn validate(name: &str, value: &str) -> bool {
    if let Some(ok) = validate::checksum(name, value) {
        return ok;
    }
    let Some(kind) = builtin_kind(name) else {
        return false;
    };
    let mut whole = false;
    builtin::scan(value.as_bytes(), kind.bit(), &mut |_, s, e| {
        whole = s == 0 && e == value.len();
        false
    });
    whole
}

/// A custom detector ready to search.
struct Custom {
    re: Regex<DFA<Vec<u32>>>,
    validator: Option<String>,
}

/// How far `settled_len` follows one in-progress custom match before treating it as still
/// open; bounds its work at this many steps per position.
const CUSTOM_WALK_MAX: usize = 1024;

impl Custom {
    /// The first offset before `limit` where a match of this pattern could begin and
    /// still be undecided at the end of `text` (its anchored DFA walk has not died), so
    /// text yet to come could change the result there.
    fn first_open_start(&self, text: &str, limit: usize) -> Option<usize> {
        let dfa = self.re.forward();
        let b = text.as_bytes();
        for p in 0..limit.min(b.len()) {
            if !text.is_char_boundary(p) {
                continue;
            }
            let input = Input::new(b).range(p..).anchored(Anchored::Yes);
            let Ok(mut sid) = dfa.start_state_forward(&input) else {
                return Some(p);
            };
            let mut open = true;
            for (k, &c) in b.get(p..).unwrap_or_default().iter().enumerate() {
                if k >= CUSTOM_WALK_MAX || dfa.is_quit_state(sid) {
                    break;
                }
                sid = dfa.next_state(sid, c);
                if dfa.is_dead_state(sid) {
                    open = false;
                    break;
                }
            }
            if open {
                return Some(p);
            }
        }
        None
    }
}

enum Entry {
    Builtin(Kind),
    Custom(Box<Custom>),
}

/// A policy's detectors, ready to scan text. Built once per VM; scanning takes `&self`
/// so one scanner serves every request.
pub struct Scanner {
    names: Vec<String>,
    classes: Vec<DetectorClass>,
    entries: Vec<Entry>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("detectors", &self.names)
            .finish()
    }
}

/// Deserializes one little-endian dense DFA, copying it to a 4-byte aligned buffer first
/// because `from_bytes` needs `u32` alignment and IR byte vectors carry none.
fn load_dfa(bytes: &[u8]) -> Result<DFA<Vec<u32>>, String> {
    let mut buf = vec![0u8; bytes.len() + 3];
    let off = buf.as_ptr().align_offset(4).min(3);
    let slot = buf
        .get_mut(off..off + bytes.len())
        .ok_or_else(|| "alignment".to_string())?;
    slot.copy_from_slice(bytes);
    let (dfa, _) = DFA::from_bytes(slot).map_err(|e| e.to_string())?;
    Ok(dfa.to_owned())
}

impl Scanner {
    /// Builds the scanner for a policy's detectors; detector ids are their indices in
    /// `detectors`. Fails on an unknown built-in name, an unknown validator or a custom
    /// DFA that does not deserialize (wrong endianness, corrupted, other version).
    pub fn new(detectors: &[Detector]) -> Result<Scanner, DetectError> {
        if detectors.len() > usize::from(u16::MAX) {
            return Err(DetectError::TooManyDetectors(detectors.len()));
        }
        let mut entries = Vec::with_capacity(detectors.len());
        for d in detectors {
            let entry = match &d.kind {
                DetectorKind::Builtin(name) => Entry::Builtin(
                    builtin_kind(name).ok_or_else(|| DetectError::UnknownBuiltin(name.clone()))?,
                ),
                DetectorKind::Custom(c) => {
                    if let Some(v) = &c.validator
                        && !is_validator(v)
                    {
                        return Err(DetectError::UnknownValidator {
                            detector: d.name.clone(),
                            validator: v.clone(),
                        });
                    }
                    let bad = |reason: String| DetectError::BadDfa {
                        detector: d.name.clone(),
                        reason,
                    };
                    let fwd = load_dfa(&c.forward_dfa).map_err(bad)?;
                    let rev = load_dfa(&c.reverse_dfa).map_err(bad)?;
                    Entry::Custom(Box::new(Custom {
                        re: Regex::builder().build_from_dfas(fwd, rev),
                        validator: c.validator.clone(),
                    }))
                }
            };
            entries.push(entry);
        }
        Ok(Scanner {
            names: detectors.iter().map(|d| d.name.clone()).collect(),
            classes: detectors.iter().map(|d| d.class).collect(),
            entries,
        })
    }

    /// Number of detectors (ids are `0..len()`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the policy declares no detectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A detector's name, e.g. to build its [`mask`].
    pub fn name(&self, id: u16) -> Option<&str> {
        self.names.get(usize::from(id)).map(String::as_str)
    }

    /// A detector's class.
    pub fn class(&self, id: u16) -> Option<DetectorClass> {
        self.classes.get(usize::from(id)).copied()
    }

    /// Every detector id, for rules that ask for all detected values.
    pub fn all_ids(&self) -> Vec<u16> {
        (0..self.entries.len())
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    /// The ids of a class, for `pii` and `secret` in the language.
    pub fn ids_of_class(&self, class: DetectorClass) -> Vec<u16> {
        (0..self.entries.len())
            .filter(|&i| self.classes.get(i) == Some(&class))
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    /// The built-in kind mask and kind → detector id map for `wanted`.
    fn plan(&self, wanted: &[u16]) -> (Mask, [u16; KINDS]) {
        let mut mask: Mask = 0;
        let mut ids = [u16::MAX; KINDS];
        for &id in wanted {
            if let Some(Entry::Builtin(k)) = self.entries.get(usize::from(id))
                && mask & k.bit() == 0
            {
                mask |= k.bit();
                if let Some(slot) = ids.get_mut(*k as usize) {
                    *slot = id;
                }
            }
        }
        (mask, ids)
    }

    /// Runs the custom detectors in `wanted`, calling `sink` with each validated match.
    fn scan_custom(&self, text: &str, wanted: &[u16], sink: &mut dyn FnMut(Match) -> bool) {
        for (j, &id) in wanted.iter().enumerate() {
            // The kind first, then the duplicate check: most wanted ids are built-ins,
            // and the check is quadratic in the number of wanted ids.
            let Some(Entry::Custom(c)) = self.entries.get(usize::from(id)) else {
                continue;
            };
            if wanted.get(..j).is_some_and(|w| w.contains(&id)) {
                continue;
            }
            let mut pos = 0usize;
            while pos <= text.len() {
                // `try_search` rather than `find_iter`: a DFA that may quit (e.g. built
                // with Unicode word-boundary heuristics) reports an error instead of
                // panicking; the detector then stops for this text.
                let input = Input::new(text.as_bytes()).range(pos..);
                let Ok(Some(m)) = c.re.try_search(&input) else {
                    break;
                };
                let (s, e) = (m.start(), m.end());
                pos = if e > s {
                    e
                } else {
                    // Skip an empty match by one char so the loop always advances.
                    e + text
                        .get(e..)
                        .and_then(|t| t.chars().next())
                        .map_or(1, char::len_utf8)
                };
                if s == e || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
                    continue;
                }
                if let Some(v) = &c.validator
                    && !text.get(s..e).is_some_and(|val| validate(v, val))
                {
                    continue;
                }
                if !sink(Match {
                    detector: id,
                    start: s,
                    end: e,
                }) {
                    return;
                }
            }
        }
    }

    /// Finds the values of the `wanted` detectors in `text`, replacing the contents of
    /// `out` with non-overlapping matches sorted by start. Where candidates overlap the
    /// leftmost wins, then the longest, then the lower detector id. Unknown ids are
    /// ignored. Linear in `text` for each custom detector and for the built-ins together.
    ///
    /// Disguised values count too (see [`normalize`]): a value found in the folded view
    /// of `text` (fullwidth or other scripts' digits, look-alike letters, invisible
    /// characters removed, `%XX` decoded) or in a decoded base64 or hex run is reported on
    /// the whole original span it was written as.
    pub fn scan(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>) {
        self.scan_with(text, wanted, ScanHint::default(), out);
    }

    /// [`Scanner::scan`] with the shortcuts a [`Scanner::present`] walk of the same text
    /// allows (see [`ScanHint`]), so that what it already walked is not walked again. The
    /// matches are the same.
    pub fn scan_with(&self, text: &str, wanted: &[u16], hint: ScanHint, out: &mut Vec<Match>) {
        let mut dirty = self.collect_from(text, wanted, hint.from, out);
        if hint.plain {
            if dirty {
                resolve(out);
            }
            return;
        }
        if let Some(view) = normalize::View::of(text) {
            let mut found = Vec::new();
            self.scan_plain(&view.text, wanted, &mut found);
            for m in found {
                if let Some((start, end)) = view.original(m.start, m.end) {
                    out.push(Match {
                        detector: m.detector,
                        start,
                        end,
                    });
                    dirty = true;
                }
            }
        }
        let mut found = Vec::new();
        normalize::decoded_runs(text, &mut |start, end, decoded| {
            self.scan_plain(decoded, wanted, &mut found);
            if let Some(m) = found.first() {
                out.push(Match {
                    detector: m.detector,
                    start,
                    end,
                });
                dirty = true;
            }
            true
        });
        if dirty {
            resolve(out);
        }
    }

    /// Adds to `present` (kept sorted, without repeats) every detector `d` of `wanted`
    /// that `any(text, &[d])` would find, exactly, in one walk of the text (and of its
    /// folded view and decoded runs, as [`Scanner::any`] looks there too): what every
    /// `… has` condition over `text` needs. Unlike a [`Scanner::scan`] with all of
    /// `wanted`, a longer value of one detector cannot hide a value of another here.
    ///
    /// `starts` gets `(id, at)` for each built-in detector found in `text` itself (not
    /// only in a disguised form): the position the walk found it at, where a scan for it
    /// may begin ([`ScanHint::from`]). Returns [`ScanHint::plain`] for `text`: true when
    /// the walk looked for disguised forms and `text` has none to look into.
    pub fn present(
        &self,
        text: &str,
        wanted: &[u16],
        present: &mut Vec<u16>,
        starts: &mut Vec<(u16, usize)>,
    ) -> bool {
        let mut mask: Mask = 0;
        let mut customs: Vec<u16> = Vec::new();
        for &id in wanted {
            if present.binary_search(&id).is_ok() {
                continue;
            }
            match self.entries.get(usize::from(id)) {
                Some(Entry::Builtin(k)) => mask |= k.bit(),
                Some(Entry::Custom(_)) if !customs.contains(&id) => customs.push(id),
                _ => {}
            }
        }
        if mask == 0 && customs.is_empty() {
            return false;
        }
        let mut found: Mask = 0;
        let mut found_ids: Vec<u16> = Vec::new();
        let mut plain_first: Vec<(builtin::Kind, usize)> = Vec::new();
        let mut look = |t: &str, plain: bool, mask: &mut Mask, customs: &mut Vec<u16>| {
            let hit = builtin::present(t.as_bytes(), *mask, &mut |k, at| {
                if plain {
                    plain_first.push((k, at));
                }
            });
            found |= hit;
            *mask &= !hit;
            customs.retain(|&id| {
                let mut hit = false;
                self.scan_custom(t, &[id], &mut |_| {
                    hit = true;
                    false
                });
                if hit {
                    found_ids.push(id);
                }
                !hit
            });
            *mask != 0 || !customs.is_empty()
        };
        let mut plain = false;
        if look(text, true, &mut mask, &mut customs) {
            let view = normalize::View::of(text);
            let more = match &view {
                Some(view) => look(&view.text, false, &mut mask, &mut customs),
                None => true,
            };
            if more {
                let mut runs = false;
                normalize::decoded_runs(text, &mut |_, _, decoded| {
                    runs = true;
                    look(decoded, false, &mut mask, &mut customs)
                });
                plain = view.is_none() && !runs;
            }
        }
        for &id in wanted {
            let hit = match self.entries.get(usize::from(id)) {
                Some(Entry::Builtin(k)) => found & k.bit() != 0,
                Some(Entry::Custom(_)) => found_ids.contains(&id),
                None => false,
            };
            if hit && let Err(at) = present.binary_search(&id) {
                present.insert(at, id);
            }
            if let Some(Entry::Builtin(k)) = self.entries.get(usize::from(id))
                && let Some(&(_, at)) = plain_first.iter().find(|(pk, _)| pk == k)
                && !starts.iter().any(|(d, _)| *d == id)
            {
                starts.push((id, at));
            }
        }
        plain
    }

    /// [`Scanner::scan`] without looking for disguised forms.
    fn scan_plain(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>) {
        if self.collect(text, wanted, out) {
            resolve(out);
        }
    }

    /// Replaces `out` with every candidate of the `wanted` detectors in `text`; returns
    /// whether they may overlap or be out of order (so [`resolve`] must run).
    fn collect(&self, text: &str, wanted: &[u16], out: &mut Vec<Match>) -> bool {
        self.collect_from(text, wanted, 0, out)
    }

    /// [`Scanner::collect`], the built-ins walked from `from` (see [`ScanHint::from`]).
    fn collect_from(&self, text: &str, wanted: &[u16], from: usize, out: &mut Vec<Match>) -> bool {
        out.clear();
        let (mask, ids) = self.plan(wanted);
        let mut clean = true;
        let mut prev_end = 0usize;
        builtin::scan_from(text.as_bytes(), mask, from, &mut |k, s, e| {
            let detector = ids.get(k as usize).copied().unwrap_or(u16::MAX);
            clean &= s >= prev_end;
            prev_end = e;
            out.push(Match {
                detector,
                start: s,
                end: e,
            });
            true
        });
        let before = out.len();
        self.scan_custom(text, wanted, &mut |m| {
            out.push(m);
            true
        });
        !(out.len() == before && clean)
    }

    /// An upper bound on the byte length of any match of the `wanted` detectors, or `None`
    /// when some can be arbitrarily long (`private_key`, custom patterns).
    pub fn max_match_len(&self, wanted: &[u16]) -> Option<usize> {
        let mut max = 0usize;
        for &id in wanted {
            match self.entries.get(usize::from(id)) {
                Some(Entry::Builtin(k)) => max = max.max(builtin::max_len(*k)?),
                Some(Entry::Custom(_)) => return None,
                None => {}
            }
        }
        Some(max)
    }

    /// For streaming: the length `n` of the prefix of `text` whose scan result is final.
    /// Whatever is appended to `text`, the matches of the longer text that start before
    /// `n` are exactly the matches of `text` that start before `n`, and none of them
    /// crosses `n`. A rewriter may therefore emit `text[..n]` (redacted) and keep only the
    /// rest buffered, and chunked output equals whole-stream output. Always a char
    /// boundary. Built-ins hold back their maximum match length (a private key block
    /// from its BEGIN until its END); custom detectors hold back from the first offset
    /// where their DFA could still be inside a match.
    pub fn settled_len(&self, text: &str, wanted: &[u16]) -> usize {
        let (mask, _) = self.plan(wanted);
        let bounded = mask & !Kind::PrivateKey.bit() & !Kind::GcpServiceAccount.bit();
        let mut reach = 0usize;
        let mut customs = Vec::new();
        for id in wanted {
            match self.entries.get(usize::from(*id)) {
                Some(Entry::Custom(c)) => customs.push(c),
                Some(Entry::Builtin(k)) if bounded & k.bit() != 0 => {
                    reach = reach.max(builtin::max_len(*k).unwrap_or(0));
                }
                _ => {}
            }
        }
        let mut settled = text.len();
        if mask & Kind::PrivateKey.bit() != 0 {
            // A BEGIN header may still be arriving; a block without its END line may
            // still grow up to an END line that arrives later.
            reach = reach.max(builtin::PRIVATE_KEY_HEADER_MAX);
            let b = text.as_bytes();
            builtin::scan(b, Kind::PrivateKey.bit(), &mut |_, s, e| {
                let closed = text.get(..e).is_some_and(|t| t.ends_with("-----"))
                    && text.get(s..e).is_some_and(|t| t.contains("-----END "));
                if !closed {
                    settled = settled.min(s);
                }
                closed
            });
        }
        if mask & Kind::GcpServiceAccount.bit() != 0 {
            // Like a key block: held from an open header until its key arrives.
            reach = reach.max(builtin::GCP_HEADER_MAX);
            if let Some(p) = builtin::gcp_open_start(text.as_bytes()) {
                settled = settled.min(p);
            }
        }
        if mask != 0 {
            settled = settled.min(text.len().saturating_sub(reach + builtin::LOOKAHEAD));
        }
        for c in customs {
            if let Some(p) = c.first_open_start(text, settled) {
                settled = settled.min(p);
            }
        }
        while settled > 0 && !text.is_char_boundary(settled) {
            settled -= 1;
        }
        if settled > 0 {
            // A final match may straddle the cut: move the cut to its end.
            let mut out = Vec::new();
            self.scan(text, wanted, &mut out);
            if let Some(m) = out.iter().find(|m| m.start < settled && m.end > settled) {
                settled = m.end;
            }
        }
        settled
    }

    /// Whether `text` contains any value of the `wanted` detectors, stopping at the first.
    /// Disguised values count, as in [`Scanner::scan`].
    pub fn any(&self, text: &str, wanted: &[u16]) -> bool {
        if self.any_plain(text, wanted) {
            return true;
        }
        if let Some(view) = normalize::View::of(text)
            && self.any_plain(&view.text, wanted)
        {
            return true;
        }
        let mut found = false;
        normalize::decoded_runs(text, &mut |_, _, decoded| {
            found = self.any_plain(decoded, wanted);
            !found
        });
        found
    }

    /// [`Scanner::any`] without looking for disguised forms.
    fn any_plain(&self, text: &str, wanted: &[u16]) -> bool {
        let (mask, _) = self.plan(wanted);
        let mut found = false;
        builtin::scan(text.as_bytes(), mask, &mut |_, _, _| {
            found = true;
            false
        });
        if !found {
            self.scan_custom(text, wanted, &mut |_| {
                found = true;
                false
            });
        }
        found
    }
}

/// Sorts candidates by start and keeps the non-overlapping ones: where they overlap the
/// leftmost wins, then the longest, then the lower detector id.
fn resolve(out: &mut Vec<Match>) {
    out.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.detector.cmp(&b.detector))
    });
    let mut last_end = 0usize;
    let mut keep = 0usize;
    for r in 0..out.len() {
        let Some(&m) = out.get(r) else { break };
        if m.start >= last_end {
            last_end = m.end;
            if let Some(slot) = out.get_mut(keep) {
                *slot = m;
            }
            keep += 1;
        }
    }
    out.truncate(keep);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod disguise_tests {
    use super::*;
    use crate::ir::{Detector, DetectorClass, DetectorKind};

    fn scanner(names: &[&str]) -> Scanner {
        let ds: Vec<Detector> = names
            .iter()
            .map(|n| Detector {
                name: n.to_string(),
                class: DetectorClass::Pii,
                kind: DetectorKind::Builtin(n.to_string()),
            })
            .collect();
        Scanner::new(&ds).unwrap()
    }

    fn spans(s: &Scanner, text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        s.scan(text, &s.all_ids(), &mut out);
        out.iter()
            .map(|m| {
                (
                    s.name(m.detector).unwrap().to_string(),
                    text[m.start..m.end].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn disguised_values_are_found_on_their_whole_original_span() {
        let s = scanner(&["credit_card", "email"]);
        let cases = [
            (
                "fullwidth",
                "pay ４１１１ １１１１ １１１１ １１１１ now",
                "４１１１ １１１１ １１１１ １１１１",
                "credit_card",
            ),
            (
                "zero width",
                "to jane\u{200b}.doe@example.com ok",
                "jane\u{200b}.doe@example.com",
                "email",
            ),
            (
                "percent",
                "q=jane.doe%40example.com&x",
                "jane.doe%40example.com",
                "email",
            ),
            (
                "base64",
                "blob amFuZS5kb2VAZXhhbXBsZS5jb20= end",
                "amFuZS5kb2VAZXhhbXBsZS5jb20=",
                "email",
            ),
            (
                "hex",
                "h 6a616e65406578616d706c652e636f6d",
                "6a616e65406578616d706c652e636f6d",
                "email",
            ),
            (
                "arabic digits",
                "٤١١١١١١١١١١١١١١١",
                "٤١١١١١١١١١١١١١١١",
                "credit_card",
            ),
        ];
        for (what, text, value, det) in cases {
            assert_eq!(
                spans(&s, text),
                vec![(det.to_string(), value.to_string())],
                "{what}"
            );
            assert!(s.any(text, &s.all_ids()), "{what}");
        }
    }

    #[test]
    fn plain_values_and_clean_text_are_unchanged() {
        let s = scanner(&["credit_card", "email"]);
        assert_eq!(
            spans(&s, "a jane@example.com b 4111 1111 1111 1111"),
            vec![
                ("email".to_string(), "jane@example.com".to_string()),
                ("credit_card".to_string(), "4111 1111 1111 1111".to_string())
            ]
        );
        for clean in [
            "internationalization and café",
            "100% of ４２ things",
            "QUJDREVGR0hJSktMTU5PUA==",
        ] {
            assert!(spans(&s, clean).is_empty(), "{clean}");
            assert!(!s.any(clean, &s.all_ids()), "{clean}");
        }
    }
}
