//! National identifiers, bank details, wallet and hardware addresses.
//!
//! Digit-only formats are classified from the digit-group [`Run`] the parent parses once
//! per token start; the others are recognised character by character with a bounded
//! look-ahead. Every candidate is confirmed by its validator in [`checksum`]. Bare digit
//! runs with no structure of their own (a 9-digit routing number, a 10-digit NHS number)
//! are too common in ordinary text to take on a checksum alone (one in ten random runs
//! passes a mod-10 check), so those formats also need a context keyword in the 48 bytes
//! before the value (`routing`, `NHS`, `TFN`, …).

use super::super::checksum as ck;
use super::{Kind, Mask, Run, at, is_word, run_len};

/// Kinds classified from the digit-group run.
pub(super) const RUN_KINDS: Mask = Kind::UsAbaRouting.bit()
    | Kind::UsNpi.bit()
    | Kind::UsPassport.bit()
    | Kind::UkNhs.bit()
    | Kind::AuTfn.bit()
    | Kind::NlBsn.bit()
    | Kind::DeTaxId.bit()
    | Kind::PlPesel.bit()
    | Kind::UsEin.bit()
    | Kind::UkBankAccount.bit()
    | Kind::FrNir.bit()
    | Kind::SePersonnummer.bit()
    | Kind::BeNationalNumber.bit()
    | Kind::InAadhaar.bit()
    | Kind::CaSin.bit()
    | Kind::AuMedicare.bit();

/// Longest bech32 address accepted.
pub(super) const BECH32_MAX: usize = 74;

/// How far before a value its context keyword may be.
const KEYWORD_WINDOW: usize = 48;

/// Whether one of `kws` (lowercase) appears as a whole word, in any case, in the
/// [`KEYWORD_WINDOW`] bytes before `start`.
fn keyword_before(b: &[u8], start: usize, kws: &[&[u8]]) -> bool {
    let from = start.saturating_sub(KEYWORD_WINDOW);
    let win = b.get(from..start).unwrap_or_default();
    kws.iter().any(|kw| {
        win.windows(kw.len()).enumerate().any(|(p, w)| {
            w.eq_ignore_ascii_case(kw)
                && !(p > 0 && win.get(p - 1).is_some_and(u8::is_ascii_alphanumeric))
                && !win.get(p + kw.len()).is_some_and(u8::is_ascii_alphanumeric)
        })
    })
}

/// Up to 24 digits of a run's first groups, and where those groups end.
struct Digits {
    d: [u8; 24],
    n: usize,
    end: usize,
}

impl Digits {
    fn get(&self) -> &[u8] {
        self.d.get(..self.n).unwrap_or_default()
    }
}

/// The digits of the first `lens.len()` groups of `r` when they have exactly those
/// lengths, stand alone ([`Run::prefix_ok`]) and have no parentheses, and the separator
/// before group `j` (for `j ≥ 1`) is accepted by `sep(j, byte)`.
fn layout(b: &[u8], r: &Run, lens: &[usize], sep: impl Fn(usize, u8) -> bool) -> Option<Digits> {
    let k = lens.len();
    if r.len < k || !r.prefix_ok(b, k) || r.any_paren(k) {
        return None;
    }
    let mut out = Digits {
        d: [0; 24],
        n: 0,
        end: r.end(k),
    };
    for (j, &len) in lens.iter().enumerate() {
        let g = r.group(j);
        if g.len() != len || (j > 0 && !sep(j, r.sep(j))) {
            return None;
        }
        for &c in b.get(g.ds..g.de).unwrap_or_default() {
            *out.d.get_mut(out.n)? = c;
            out.n += 1;
        }
    }
    Some(out)
}

/// [`layout`] with one separator, the same in every gap, from `allowed`.
fn same_sep(b: &[u8], r: &Run, lens: &[usize], allowed: &[u8]) -> Option<Digits> {
    let first = r.sep(1);
    layout(b, r, lens, |_, s| s == first && allowed.contains(&s))
}

/// [`layout`] with exactly the separators of `pattern` (one per gap).
fn exact_sep(b: &[u8], r: &Run, lens: &[usize], pattern: &[u8]) -> Option<Digits> {
    layout(b, r, lens, |j, s| pattern.get(j - 1) == Some(&s))
}

/// A single bare group of `len` digits.
fn bare(b: &[u8], r: &Run, len: usize) -> Option<Digits> {
    layout(b, r, &[len], |_, _| false)
}

/// Either layout, the first that fits.
fn either(a: Option<Digits>, b: impl FnOnce() -> Option<Digits>) -> Option<Digits> {
    a.or_else(b)
}

/// EIN campus prefixes the IRS assigns (07–09, 17–19, 28–29, 49, 69–70, 78–79, 89 and
/// 96–97 are not).
fn ein_prefix(d: &[u8]) -> bool {
    let p = d
        .get(..2)
        .map_or(0, |x| u32::from(x[0] - b'0') * 10 + u32::from(x[1] - b'0'));
    !matches!(p, 0 | 7..=9 | 17..=19 | 28 | 29 | 49 | 69 | 70 | 78 | 79 | 89 | 96 | 97)
}

/// Offers every digit-run kind of `m` found at token start `i`.
pub(super) fn numeric(
    b: &[u8],
    i: usize,
    r: &Run,
    m: Mask,
    offer: &mut dyn FnMut(Kind, Option<usize>),
) {
    let on = |k: Kind| m & k.bit() != 0;
    let kw = |kws: &[&[u8]]| keyword_before(b, i, kws);
    let mut try_kind = |k: Kind, d: Option<Digits>, ok: &dyn Fn(&[u8]) -> bool, kws: &[&[u8]]| {
        if let Some(d) = d
            && ok(d.get())
            && (kws.is_empty() || kw(kws))
        {
            offer(k, Some(d.end));
        }
    };
    if on(Kind::UsAbaRouting) {
        let d = bare(b, r, 9);
        try_kind(
            Kind::UsAbaRouting,
            d,
            &ck::aba,
            &[b"routing", b"aba", b"rtn", b"ach", b"transit"],
        );
    }
    if on(Kind::UsNpi) {
        try_kind(Kind::UsNpi, bare(b, r, 10), &ck::npi, &[b"npi"]);
    }
    if on(Kind::UsPassport) {
        try_kind(Kind::UsPassport, bare(b, r, 9), &|_| true, &[b"passport"]);
    }
    if on(Kind::UkNhs) {
        let d = either(same_sep(b, r, &[3, 3, 4], b" -"), || bare(b, r, 10));
        try_kind(Kind::UkNhs, d, &ck::nhs, &[b"nhs"]);
    }
    if on(Kind::AuTfn) {
        let d = either(same_sep(b, r, &[3, 3, 3], b" -"), || bare(b, r, 9));
        try_kind(Kind::AuTfn, d, &ck::au_tfn, &[b"tfn", b"tax file"]);
    }
    if on(Kind::NlBsn) {
        let d = either(bare(b, r, 9), || exact_sep(b, r, &[4, 2, 3], b".."));
        try_kind(
            Kind::NlBsn,
            d,
            &ck::nl_bsn,
            &[b"bsn", b"burgerservicenummer", b"sofinummer"],
        );
    }
    if on(Kind::DeTaxId) {
        let d = either(bare(b, r, 11), || same_sep(b, r, &[2, 3, 3, 3], b" "));
        let kws: &[&[u8]] = &[
            b"steuer-id",
            b"steuerid",
            b"steuer-idnr",
            b"idnr",
            b"steueridentifikationsnummer",
            b"identifikationsnummer",
            b"tax id",
            b"tin",
        ];
        try_kind(Kind::DeTaxId, d, &ck::de_tax_id, kws);
    }
    if on(Kind::PlPesel) {
        try_kind(Kind::PlPesel, bare(b, r, 11), &ck::pl_pesel, &[b"pesel"]);
    }
    if on(Kind::UsEin) {
        let d = exact_sep(b, r, &[2, 7], b"-");
        try_kind(Kind::UsEin, d, &ein_prefix, &[]);
    }
    if on(Kind::UkBankAccount) {
        let d = exact_sep(b, r, &[2, 2, 2, 8], b"-- ");
        try_kind(Kind::UkBankAccount, d, &|_| true, &[]);
    }
    if on(Kind::FrNir) {
        let d = either(bare(b, r, 15), || {
            same_sep(b, r, &[1, 2, 2, 2, 3, 3, 2], b" ")
        });
        try_kind(Kind::FrNir, d, &ck::fr_nir, &[]);
    }
    if on(Kind::SePersonnummer) {
        if let Some(d) = exact_sep(b, r, &[6, 4], b"-") {
            try_kind(Kind::SePersonnummer, Some(d), &ck::se_personnummer, &[]);
        } else if let Some(d) = exact_sep(b, r, &[8, 4], b"-") {
            let century_ok = matches!(d.get().get(..2), Some(b"18" | b"19" | b"20"));
            let tail = d.get().get(2..).map(<[u8]>::to_vec).unwrap_or_default();
            let ok = century_ok && ck::se_personnummer(&tail);
            try_kind(Kind::SePersonnummer, Some(d), &|_| ok, &[]);
        }
    }
    if on(Kind::BeNationalNumber) {
        let d = exact_sep(b, r, &[2, 2, 2, 3, 2], b"..-.");
        try_kind(Kind::BeNationalNumber, d, &ck::be_national_number, &[]);
    }
    if on(Kind::InAadhaar) {
        let first_ok = |d: &[u8]| matches!(d.first(), Some(b'2'..=b'9')) && ck::verhoeff(d);
        let grouped = same_sep(b, r, &[4, 4, 4], b" -");
        if grouped.is_some() {
            try_kind(Kind::InAadhaar, grouped, &first_ok, &[]);
        } else {
            try_kind(
                Kind::InAadhaar,
                bare(b, r, 12),
                &first_ok,
                &[b"aadhaar", b"uid", b"uidai"],
            );
        }
    }
    if on(Kind::CaSin) {
        let grouped = same_sep(b, r, &[3, 3, 3], b" -");
        if grouped.is_some() {
            try_kind(Kind::CaSin, grouped, &ck::ca_sin, &[]);
        } else {
            let kws: &[&[u8]] = &[b"sin", b"social insurance", b"nas"];
            try_kind(Kind::CaSin, bare(b, r, 9), &ck::ca_sin, kws);
        }
    }
    if on(Kind::AuMedicare) {
        let grouped = either(same_sep(b, r, &[4, 5, 1, 1], b" "), || {
            same_sep(b, r, &[4, 5, 1], b" ")
        });
        if grouped.is_some() {
            try_kind(Kind::AuMedicare, grouped, &ck::au_medicare, &[]);
        } else {
            let d = either(bare(b, r, 10), || bare(b, r, 11));
            try_kind(Kind::AuMedicare, d, &ck::au_medicare, &[b"medicare"]);
        }
    }
}

/// The end of a candidate of a character-level kind at token start `i`, or `None` (also
/// for kinds this module does not handle).
pub(super) fn at_kind(kind: Kind, b: &[u8], i: usize) -> Option<usize> {
    match kind {
        Kind::UsPassport => us_passport_letter(b, i),
        Kind::UsMbi => us_mbi(b, i),
        Kind::UkNino => uk_nino(b, i),
        Kind::EsDni => fixed(b, i, 9, ck::es_dni).or_else(|| es_dni_dashed(b, i)),
        Kind::ItCodiceFiscale => fixed(b, i, 16, ck::it_codice_fiscale),
        Kind::FiHetu => fi_hetu(b, i),
        Kind::EuVat => eu_vat(b, i),
        Kind::InPan => fixed(b, i, 10, in_pan),
        Kind::SgNric => fixed(b, i, 9, ck::sg_nric),
        Kind::PassportMrz => mrz(b, i),
        Kind::BtcAddress => btc(b, i),
        Kind::EthAddress => eth(b, i),
        Kind::MacAddress => mac(b, i),
        _ => None,
    }
}

/// Whether a value ending at `e` stands alone: no word byte follows.
fn ends(b: &[u8], e: usize) -> Option<usize> {
    (!is_word(at(b, e))).then_some(e)
}

/// A run of exactly `len` ASCII letters and digits at `i`, accepted by `ok`.
fn fixed(b: &[u8], i: usize, len: usize, ok: fn(&[u8]) -> bool) -> Option<usize> {
    let n = run_len(b, i, len, |c| c.is_ascii_alphanumeric());
    if n != len {
        return None;
    }
    ok(b.get(i..i + len)?).then_some(i + len)
}

/// A US passport in the next-generation form: one letter and eight digits, after the
/// word "passport".
fn us_passport_letter(b: &[u8], i: usize) -> Option<usize> {
    if !at(b, i).is_ascii_uppercase() || run_len(b, i + 1, 8, |c| c.is_ascii_digit()) != 8 {
        return None;
    }
    let e = ends(b, i + 9)?;
    keyword_before(b, i, &[b"passport"]).then_some(e)
}

/// Medicare Beneficiary Identifier: 11 characters `C A AN N A AN N A A N N` (letters
/// exclude S, L, O, I, B, Z), optionally written 4-3-4 with dashes.
fn us_mbi(b: &[u8], i: usize) -> Option<usize> {
    let letter = |c: u8| c.is_ascii_uppercase() && !b"SLOIBZ".contains(&c);
    let digit = |c: u8| c.is_ascii_digit();
    let rules: [&dyn Fn(u8) -> bool; 11] = [
        &|c| (b'1'..=b'9').contains(&c),
        &letter,
        &|c| letter(c) || digit(c),
        &digit,
        &letter,
        &|c| letter(c) || digit(c),
        &digit,
        &letter,
        &letter,
        &digit,
        &digit,
    ];
    let dashed = at(b, i + 4) == b'-';
    let mut p = i;
    for (k, rule) in rules.iter().enumerate() {
        if dashed && (k == 4 || k == 7) {
            if at(b, p) != b'-' {
                return None;
            }
            p += 1;
        }
        if !rule(at(b, p)) {
            return None;
        }
        p += 1;
    }
    ends(b, p)
}

/// UK National Insurance number: two prefix letters (not D, F, I, Q, U, V; second not O;
/// not BG, GB, KN, NK, NT, TN, ZZ), six digits (optionally in pairs with spaces) and a
/// suffix A–D.
fn uk_nino(b: &[u8], i: usize) -> Option<usize> {
    let (c0, c1) = (at(b, i), at(b, i + 1));
    let bad = b"DFIQUV";
    if !c0.is_ascii_uppercase()
        || !c1.is_ascii_uppercase()
        || bad.contains(&c0)
        || bad.contains(&c1)
        || c1 == b'O'
    {
        return None;
    }
    if matches!(
        &[c0, c1],
        b"BG" | b"GB" | b"KN" | b"NK" | b"NT" | b"TN" | b"ZZ"
    ) {
        return None;
    }
    let spaced = at(b, i + 2) == b' ';
    let mut p = i + 2;
    for _ in 0..3 {
        if spaced {
            if at(b, p) != b' ' {
                return None;
            }
            p += 1;
        }
        if !at(b, p).is_ascii_digit() || !at(b, p + 1).is_ascii_digit() {
            return None;
        }
        p += 2;
    }
    if spaced && at(b, p) == b' ' {
        p += 1;
    }
    if !matches!(at(b, p), b'A'..=b'D') {
        return None;
    }
    ends(b, p + 1)
}

/// A DNI written with a dash before its letter (`12345678-Z`).
fn es_dni_dashed(b: &[u8], i: usize) -> Option<usize> {
    if run_len(b, i, 8, |c| c.is_ascii_digit()) != 8 || at(b, i + 8) != b'-' {
        return None;
    }
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(b.get(i..i + 8)?);
    v[8] = at(b, i + 9);
    (ck::es_dni(&v)).then_some(())?;
    ends(b, i + 10)
}

/// Finnish HETU at `i` (11 characters, the century sign in the middle).
fn fi_hetu(b: &[u8], i: usize) -> Option<usize> {
    if run_len(b, i, 6, |c| c.is_ascii_digit()) != 6 {
        return None;
    }
    let v = b.get(i..i + 11)?;
    ck::fi_hetu(v).then_some(())?;
    ends(b, i + 11)
}

/// An EU VAT number: two uppercase letters of a member state and 8–12 characters.
fn eu_vat(b: &[u8], i: usize) -> Option<usize> {
    if !at(b, i).is_ascii_uppercase() || !at(b, i + 1).is_ascii_uppercase() {
        return None;
    }
    let third = at(b, i + 2);
    if !(third.is_ascii_digit() || matches!(third, b'U' | b'A'..=b'Z')) {
        return None;
    }
    let n = run_len(b, i + 2, 12, |c| {
        c.is_ascii_digit() || c.is_ascii_uppercase()
    });
    if !(8..=12).contains(&n) {
        return None;
    }
    ck::eu_vat(b.get(i..i + 2 + n)?).then_some(())?;
    ends(b, i + 2 + n)
}

/// Indian PAN `AAAAA9999A`, the fourth letter naming the holder type (P person, C
/// company, H HUF, F firm, A AOP, T trust, B BOI, L local authority, J juridical, G
/// government).
fn in_pan(v: &[u8]) -> bool {
    v.len() == 10
        && v.iter().take(5).all(u8::is_ascii_uppercase)
        && v.get(5..9)
            .unwrap_or_default()
            .iter()
            .all(u8::is_ascii_digit)
        && v.get(9).is_some_and(u8::is_ascii_uppercase)
        && v.get(3).is_some_and(|c| b"PCHFATBLJG".contains(c))
}

/// A passport MRZ second line: exactly 44 of `A–Z 0–9 <`, every check digit valid.
fn mrz(b: &[u8], i: usize) -> Option<usize> {
    let is_mrz = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'<';
    if run_len(b, i, 44, is_mrz) != 44 {
        return None;
    }
    ck::mrz_td3_line2(b.get(i..i + 44)?).then_some(())?;
    ends(b, i + 44)
}

fn is_base58(c: u8) -> bool {
    c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l')
}

/// A Bitcoin address: base58check (`1…`, `3…`) or bech32/bech32m (`bc1…`, either case).
fn btc(b: &[u8], i: usize) -> Option<usize> {
    match at(b, i) {
        b'1' | b'3' => {
            let n = run_len(b, i, 35, is_base58);
            if !(26..=35).contains(&n) {
                return None;
            }
            ck::btc_base58(b.get(i..i + n)?).then_some(())?;
            ends(b, i + n)
        }
        b'b' | b'B' => {
            let n = run_len(b, i, BECH32_MAX, |c| c.is_ascii_alphanumeric());
            if !(14..=BECH32_MAX).contains(&n) {
                return None;
            }
            let v = b.get(i..i + n)?;
            if !v.get(..3)?.eq_ignore_ascii_case(b"bc1") {
                return None;
            }
            let lower = v.iter().all(|c| !c.is_ascii_uppercase());
            let upper = v.iter().all(|c| !c.is_ascii_lowercase());
            if !(lower || upper) {
                return None;
            }
            let lc: Vec<u8> = v.iter().map(u8::to_ascii_lowercase).collect();
            ck::btc_bech32(&lc).then_some(())?;
            ends(b, i + n)
        }
        _ => None,
    }
}

/// An Ethereum address `0x` + 40 hex digits (EIP-55 checksum when mixed case).
fn eth(b: &[u8], i: usize) -> Option<usize> {
    if at(b, i) != b'0' || !matches!(at(b, i + 1), b'x' | b'X') {
        return None;
    }
    if run_len(b, i + 2, 40, |c| c.is_ascii_hexdigit()) != 40 {
        return None;
    }
    ck::eth_eip55(b.get(i + 2..i + 42)?).then_some(())?;
    ends(b, i + 42)
}

/// A MAC address: six hex pairs joined by one kind of `:` or `-`, or three groups of
/// four joined by `.` (Cisco). All-zero and broadcast addresses are not personal.
fn mac(b: &[u8], i: usize) -> Option<usize> {
    let hex = |p: usize| at(b, p).is_ascii_hexdigit();
    // Not the tail of a longer colon-, dash- or dot-joined hex run.
    if matches!(at(b, i.wrapping_sub(1)), b':' | b'-' | b'.') && hex(i.wrapping_sub(2)) {
        return None;
    }
    let e = if hex(i) && hex(i + 1) && matches!(at(b, i + 2), b':' | b'-') {
        let sep = at(b, i + 2);
        for k in 0..6 {
            let p = i + 3 * k;
            if !hex(p) || !hex(p + 1) || (k < 5 && at(b, p + 2) != sep) {
                return None;
            }
        }
        if matches!(at(b, i + 17), b':' | b'-') && hex(i + 18) {
            return None;
        }
        i + 17
    } else if (0..3)
        .all(|k| (0..4).all(|j| hex(i + 5 * k + j)) && (k == 2 || at(b, i + 5 * k + 4) == b'.'))
    {
        if at(b, i + 14) == b'.' && hex(i + 15) {
            return None;
        }
        i + 14
    } else {
        return None;
    };
    let v = b.get(i..e)?;
    let digits = v.iter().filter(|c| c.is_ascii_hexdigit());
    let all_zero = digits.clone().all(|&c| c == b'0');
    let all_f = digits.clone().all(|&c| c == b'f' || c == b'F');
    if all_zero || all_f {
        return None;
    }
    // `12:34:56:78:90:12` with no letter is as likely a time series as a MAC: keep only
    // addresses with at least one hex letter or written with `-`/`.` separators.
    let has_letter = v.iter().any(u8::is_ascii_alphabetic);
    if !has_letter && at(b, i + 2) == b':' {
        return None;
    }
    ends(b, e)
}
