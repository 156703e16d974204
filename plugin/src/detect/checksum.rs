//! Check digits and format rules of national identifiers, bank numbers and wallet
//! addresses, used by the built-in scanners to confirm a candidate.
//!
//! Why a module of its own: each function is a small published algorithm (Verhoeff, ISO
//! 7064, mod 97, weighted sums, base58check, bech32, EIP-55) that is easier to check
//! against its specification in isolation than inside a scanner. Every function takes the
//! candidate's ASCII bytes without separators and never panics.

use sha2::{Digest, Sha256};

use super::validate::luhn_digits;

/// The value of an ASCII digit (non-digits give a value above 9, which every caller
/// rejects through its own format check first).
fn dv(c: u8) -> u32 {
    u32::from(c.wrapping_sub(b'0'))
}

/// Whether every byte is an ASCII digit.
pub(crate) fn all_digits(d: &[u8]) -> bool {
    !d.is_empty() && d.iter().all(u8::is_ascii_digit)
}

/// The number spelled by ASCII digits (at most 18 of them).
fn num(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |a, &c| a * 10 + u64::from(dv(c)))
}

/// Weighted digit sum.
fn weighted(d: &[u8], w: &[u32]) -> u32 {
    d.iter().zip(w).map(|(&c, &w)| dv(c) * w).sum()
}

/// Verhoeff check (Aadhaar): catches every single-digit error and adjacent transposition.
pub(crate) fn verhoeff(d: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    if !all_digits(d) {
        return false;
    }
    let mut c = 0u8;
    for (i, &x) in d.iter().rev().enumerate() {
        let p = P
            .get(i % 8)
            .and_then(|r| r.get(usize::from(x - b'0')))
            .copied()
            .unwrap_or(0);
        c = D
            .get(usize::from(c))
            .and_then(|r| r.get(usize::from(p)))
            .copied()
            .unwrap_or(1);
    }
    c == 0
}

/// ABA routing number: 3-7-1 weights mod 10, and a Federal Reserve prefix (00–12 banks,
/// 21–32 thrifts, 61–72 electronic, 80 traveller's cheques).
pub(crate) fn aba(d: &[u8]) -> bool {
    if d.len() != 9 || !all_digits(d) {
        return false;
    }
    let p = num(d.get(..2).unwrap_or_default());
    let prefix = matches!(p, 0..=12 | 21..=32 | 61..=72 | 80);
    prefix && weighted(d, &[3, 7, 1, 3, 7, 1, 3, 7, 1]).is_multiple_of(10)
}

/// US National Provider Identifier: 10 digits starting 1 or 2, Luhn over `80840` + digits.
pub(crate) fn npi(d: &[u8]) -> bool {
    if d.len() != 10 || !all_digits(d) || !matches!(d.first(), Some(b'1' | b'2')) {
        return false;
    }
    let mut full = [0u8; 15];
    full[..5].copy_from_slice(b"80840");
    full[5..].copy_from_slice(d);
    luhn_digits(&full)
}

/// NHS number: weights 10..2 over nine digits, check = 11 − sum mod 11 (11 → 0, 10 never
/// issued).
pub(crate) fn nhs(d: &[u8]) -> bool {
    if d.len() != 10 || !all_digits(d) {
        return false;
    }
    let s = weighted(d, &[10, 9, 8, 7, 6, 5, 4, 3, 2]);
    let c = match 11 - s % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    d.get(9).is_some_and(|&x| dv(x) == c)
}

/// ISO 7064 MOD 11,10 check digit over `d` (the last byte is the check digit).
fn iso7064_11_10(d: &[u8]) -> bool {
    let Some((&check, body)) = d.split_last() else {
        return false;
    };
    let mut product = 10u32;
    for &c in body {
        let mut s = (dv(c) + product) % 10;
        if s == 0 {
            s = 10;
        }
        product = (s * 2) % 11;
    }
    let c = (11 - product) % 10;
    dv(check) == c
}

/// German tax id (Steuerliche Identifikationsnummer): 11 digits, no leading 0, in the first
/// ten exactly one digit repeats (twice, or three times but not all adjacent), ISO 7064
/// MOD 11,10 check digit.
pub(crate) fn de_tax_id(d: &[u8]) -> bool {
    if d.len() != 11 || !all_digits(d) || d.first() == Some(&b'0') {
        return false;
    }
    let mut counts = [0u8; 10];
    for &c in d.get(..10).unwrap_or_default() {
        if let Some(n) = counts.get_mut(usize::from(c - b'0')) {
            *n += 1;
        }
    }
    let repeated: Vec<usize> = (0..10)
        .filter(|&k| counts.get(k).is_some_and(|&n| n >= 2))
        .collect();
    let [r] = repeated.as_slice() else {
        return false;
    };
    let times = counts.get(*r).copied().unwrap_or(0);
    if times > 3 {
        return false;
    }
    if times == 3 {
        let rc = b'0' + *r as u8;
        if d.get(..10)
            .unwrap_or_default()
            .windows(3)
            .any(|w| w.iter().all(|&c| c == rc))
        {
            return false;
        }
    }
    iso7064_11_10(d)
}

/// French NIR (social security number): sex 1 or 2, month 01–12, 13 digits and a key
/// equal to 97 − (number mod 97). Corsican departments (`2A`, `2B`) are not handled.
pub(crate) fn fr_nir(d: &[u8]) -> bool {
    if d.len() != 15 || !all_digits(d) || !matches!(d.first(), Some(b'1' | b'2')) {
        return false;
    }
    let month = num(d.get(3..5).unwrap_or_default());
    if !(1..=12).contains(&month) {
        return false;
    }
    let body = num(d.get(..13).unwrap_or_default());
    let key = num(d.get(13..).unwrap_or_default());
    97 - body % 97 == key
}

/// Spanish DNI (8 digits + letter) or NIE (`X`/`Y`/`Z` + 7 digits + letter): the letter
/// is `TRWAGMYFPDXBNJZSQVHLCKE`[number mod 23]. `d` is the 9 characters.
pub(crate) fn es_dni(d: &[u8]) -> bool {
    const L: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let (Some(&first), Some(&letter)) = (d.first(), d.last()) else {
        return false;
    };
    if d.len() != 9 {
        return false;
    }
    let lead = match first {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        b'0'..=b'9' => dv(first),
        _ => return false,
    };
    let rest = d.get(1..8).unwrap_or_default();
    if !all_digits(rest) {
        return false;
    }
    let n = u64::from(lead) * 10_000_000 + num(rest);
    L.get((n % 23) as usize) == Some(&letter)
}

/// Italian codice fiscale: 16 characters in the layout `AAAAAA99A99A999A` (digits may be
/// replaced by the omocodia letters `LMNPQRSTUV`), month letter from `ABCDEHLMPRST`, and
/// the check letter computed from the odd/even position tables.
pub(crate) fn it_codice_fiscale(d: &[u8]) -> bool {
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    if d.len() != 16 {
        return false;
    }
    let omo = |c: u8| c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c);
    for (k, &c) in d.iter().enumerate() {
        let ok = match k {
            0..=5 | 11 | 15 => c.is_ascii_uppercase(),
            8 => b"ABCDEHLMPRST".contains(&c),
            _ => omo(c),
        };
        if !ok {
            return false;
        }
    }
    let mut sum = 0u32;
    for (k, &c) in d.get(..15).unwrap_or_default().iter().enumerate() {
        let v = if c.is_ascii_digit() {
            dv(c)
        } else {
            u32::from(c - b'A')
        };
        sum += if k % 2 == 0 {
            ODD.get(v as usize).copied().unwrap_or(0)
        } else {
            v
        };
    }
    d.get(15) == Some(&(b'A' + (sum % 26) as u8))
}

/// Dutch BSN: the 11-proof, weights 9..2 and −1, sum divisible by 11 and not zero.
pub(crate) fn nl_bsn(d: &[u8]) -> bool {
    if d.len() != 9 || !all_digits(d) {
        return false;
    }
    let s = weighted(d.get(..8).unwrap_or_default(), &[9, 8, 7, 6, 5, 4, 3, 2]);
    let last = d.get(8).map_or(0, |&c| dv(c));
    s > last && (s - last).is_multiple_of(11)
}

fn days_in_month(month: u32, year: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

fn date_ok(year: u32, month: u32, day: u32) -> bool {
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(month, year)
}

/// Polish PESEL: YYMMDD with the century in the month (+80 1800s, +0, +20, +40, +60), a
/// valid date, and weights 1-3-7-9 mod 10.
pub(crate) fn pl_pesel(d: &[u8]) -> bool {
    if d.len() != 11 || !all_digits(d) {
        return false;
    }
    let yy = num(d.get(..2).unwrap_or_default()) as u32;
    let mm = num(d.get(2..4).unwrap_or_default()) as u32;
    let dd = num(d.get(4..6).unwrap_or_default()) as u32;
    let (century, month) = match mm {
        81..=92 => (1800, mm - 80),
        1..=12 => (1900, mm),
        21..=32 => (2000, mm - 20),
        41..=52 => (2100, mm - 40),
        61..=72 => (2200, mm - 60),
        _ => return false,
    };
    if !date_ok(century + yy, month, dd) {
        return false;
    }
    let s = weighted(d, &[1, 3, 7, 9, 1, 3, 7, 9, 1, 3]);
    d.get(10).is_some_and(|&c| (10 - s % 10) % 10 == dv(c))
}

/// Swedish personnummer, 10 digits YYMMDDNNNC: a valid date (day + 60 for a
/// samordningsnummer) and Luhn over the 10 digits.
pub(crate) fn se_personnummer(d: &[u8]) -> bool {
    if d.len() != 10 || !all_digits(d) {
        return false;
    }
    let yy = num(d.get(..2).unwrap_or_default()) as u32;
    let mm = num(d.get(2..4).unwrap_or_default()) as u32;
    let mut dd = num(d.get(4..6).unwrap_or_default()) as u32;
    if dd > 60 {
        dd -= 60;
    }
    // The century is not in the 10-digit form; 2000 is a leap year like 1900 is not,
    // so accept 29 February for any year divisible by 4.
    date_ok(2000 + yy, mm, dd) && luhn_digits(d)
}

/// Finnish HETU `DDMMYYCZZZQ`: a valid date, century sign (`+`, `-`, `A`, and the 2023
/// additions `YXWVU`, `BCDEF`), individual number 002–899, and check character
/// `0123456789ABCDEFHJKLMNPRSTUVWXY`[DDMMYYZZZ mod 31].
pub(crate) fn fi_hetu(d: &[u8]) -> bool {
    const Q: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";
    if d.len() != 11 {
        return false;
    }
    let (date, sign, ind, q) = (
        d.get(..6).unwrap_or_default(),
        d.get(6).copied().unwrap_or(0),
        d.get(7..10).unwrap_or_default(),
        d.get(10).copied().unwrap_or(0),
    );
    if !all_digits(date) || !all_digits(ind) {
        return false;
    }
    let century = match sign {
        b'+' => 1800,
        b'-' | b'Y' | b'X' | b'W' | b'V' | b'U' => 1900,
        b'A' | b'B' | b'C' | b'D' | b'E' | b'F' => 2000,
        _ => return false,
    };
    let dd = num(date.get(..2).unwrap_or_default()) as u32;
    let mm = num(date.get(2..4).unwrap_or_default()) as u32;
    let yy = num(date.get(4..6).unwrap_or_default()) as u32;
    let n = num(ind);
    if !date_ok(century + yy, mm, dd) || !(2..=899).contains(&n) {
        return false;
    }
    let v = num(date) * 1000 + n;
    Q.get((v % 31) as usize) == Some(&q)
}

/// Belgian national number YYMMDDNNNCC: check = 97 − (first nine mod 97), or the same
/// over `2` followed by the nine digits for people born from 2000.
pub(crate) fn be_national_number(d: &[u8]) -> bool {
    if d.len() != 11 || !all_digits(d) {
        return false;
    }
    let body = num(d.get(..9).unwrap_or_default());
    let check = num(d.get(9..).unwrap_or_default());
    let mm = num(d.get(2..4).unwrap_or_default());
    if mm > 12 {
        return false;
    }
    97 - body % 97 == check || 97 - (2_000_000_000 + body) % 97 == check
}

/// Australian tax file number (9 digits): weights 1,4,3,7,5,8,6,9,10, sum divisible by 11.
pub(crate) fn au_tfn(d: &[u8]) -> bool {
    d.len() == 9 && all_digits(d) && weighted(d, &[1, 4, 3, 7, 5, 8, 6, 9, 10]).is_multiple_of(11)
}

/// Australian Medicare card number: first digit 2–6, weights 1,3,7,9 over eight digits
/// mod 10 is the ninth, a 10th issue digit and an optional 11th (the person's IRN, 1–9).
pub(crate) fn au_medicare(d: &[u8]) -> bool {
    if !matches!(d.len(), 10 | 11) || !all_digits(d) || !matches!(d.first(), Some(b'2'..=b'6')) {
        return false;
    }
    if d.len() == 11 && d.get(10) == Some(&b'0') {
        return false;
    }
    let s = weighted(d.get(..8).unwrap_or_default(), &[1, 3, 7, 9, 1, 3, 7, 9]);
    d.get(8).is_some_and(|&c| s % 10 == dv(c))
}

/// Canadian SIN: 9 digits, Luhn, first digit not 0 or 8 (never issued).
pub(crate) fn ca_sin(d: &[u8]) -> bool {
    d.len() == 9 && all_digits(d) && !matches!(d.first(), Some(b'0' | b'8')) && luhn_digits(d)
}

/// Singapore NRIC/FIN `S`/`T`/`F`/`G` + 7 digits + check letter (weights 2,7,6,5,4,3,2,
/// +4 for the 2000s series, letter tables per series). The 2022 `M` series is not handled.
pub(crate) fn sg_nric(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let (Some(&first), Some(&last)) = (d.first(), d.last()) else {
        return false;
    };
    let digits = d.get(1..8).unwrap_or_default();
    if !all_digits(digits) {
        return false;
    }
    let mut s = weighted(digits, &[2, 7, 6, 5, 4, 3, 2]);
    if matches!(first, b'T' | b'G') {
        s += 4;
    }
    let table: &[u8; 11] = match first {
        b'S' | b'T' => b"JZIHGFEDCBA",
        b'F' | b'G' => b"XWUTRQPNMLK",
        _ => return false,
    };
    table.get((s % 11) as usize) == Some(&last)
}

/// ICAO 9303 check digit: weights 7,3,1 over digits, letters (A = 10 … Z = 35) and `<` (0).
pub(crate) fn mrz_check(field: &[u8], check: u8) -> bool {
    let mut s = 0u32;
    for (k, &c) in field.iter().enumerate() {
        let v = match c {
            b'0'..=b'9' => dv(c),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            b'<' => 0,
            _ => return false,
        };
        s += v * [7, 3, 1].get(k % 3).copied().unwrap_or(0);
    }
    // `<` stands for 0 where an optional field is empty.
    let want = if check == b'<' { 0 } else { dv(check) };
    want <= 9 && s % 10 == want
}

/// A TD3 (passport) MRZ second line, 44 characters: document number, birth and expiry
/// dates, optional data and the composite, each with its 7-3-1 check digit.
pub(crate) fn mrz_td3_line2(d: &[u8]) -> bool {
    if d.len() != 44 {
        return false;
    }
    let f = |a: usize, b: usize| d.get(a..b).unwrap_or_default();
    let c = |k: usize| d.get(k).copied().unwrap_or(0);
    let date = |s: &[u8]| {
        all_digits(s) && {
            let mm = num(s.get(2..4).unwrap_or_default());
            let dd = num(s.get(4..6).unwrap_or_default());
            (1..=12).contains(&mm) && (1..=31).contains(&dd)
        }
    };
    let nationality = f(10, 13)
        .iter()
        .all(|&x| x.is_ascii_uppercase() || x == b'<');
    let sex = matches!(c(20), b'M' | b'F' | b'<' | b'X');
    if !nationality || !sex || !date(f(13, 19)) || !date(f(21, 27)) {
        return false;
    }
    if c(9) == b'<' || c(19) == b'<' || c(27) == b'<' || c(43) == b'<' {
        return false;
    }
    let mut composite = Vec::with_capacity(39);
    composite.extend_from_slice(f(0, 10));
    composite.extend_from_slice(f(13, 20));
    composite.extend_from_slice(f(21, 43));
    mrz_check(f(0, 9), c(9))
        && mrz_check(f(13, 19), c(19))
        && mrz_check(f(21, 27), c(27))
        && mrz_check(f(28, 42), c(42))
        && mrz_check(&composite, c(43))
}

/// Bitcoin base58check address (`1…` P2PKH, `3…` P2SH): 25 decoded bytes, version 0 or
/// 5 matching the first character, and the first four bytes of a double SHA-256.
pub(crate) fn btc_base58(s: &[u8]) -> bool {
    const A: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if !(26..=35).contains(&s.len()) {
        return false;
    }
    let mut buf = [0u8; 25];
    for &c in s {
        let Some(v) = A.iter().position(|&a| a == c) else {
            return false;
        };
        let mut carry = v as u32;
        for byte in buf.iter_mut().rev() {
            carry += 58 * u32::from(*byte);
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        if carry != 0 {
            return false;
        }
    }
    let ones = s.iter().take_while(|&&c| c == b'1').count();
    let zeros = buf.iter().take_while(|&&b| b == 0).count();
    if zeros != ones {
        return false;
    }
    let version_ok = match s.first() {
        Some(b'1') => buf[0] == 0,
        Some(b'3') => buf[0] == 5,
        _ => false,
    };
    let h = Sha256::digest(Sha256::digest(&buf[..21]));
    version_ok && h.get(..4) == buf.get(21..)
}

/// Bitcoin segwit address `bc1…` (BIP 173/350): bech32 checksum for witness version 0
/// (20- or 32-byte program), bech32m for versions 1–16. `s` is lowercase.
pub(crate) fn btc_bech32(s: &[u8]) -> bool {
    const CS: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const G: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    if !(14..=74).contains(&s.len()) || !s.starts_with(b"bc1") {
        return false;
    }
    let mut chk = 1u32;
    let mut step = |v: u32| {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ v;
        for (k, g) in G.iter().enumerate() {
            if (top >> k) & 1 == 1 {
                chk ^= g;
            }
        }
    };
    for &c in b"bc" {
        step(u32::from(c >> 5));
    }
    step(0);
    for &c in b"bc" {
        step(u32::from(c & 31));
    }
    let data = s.get(3..).unwrap_or_default();
    let mut vals = Vec::with_capacity(data.len());
    for &c in data {
        let Some(v) = CS.iter().position(|&a| a == c) else {
            return false;
        };
        vals.push(v as u32);
        step(v as u32);
    }
    let Some(&version) = vals.first() else {
        return false;
    };
    let prog_chars = vals.len().saturating_sub(7);
    let prog_bytes = prog_chars * 5 / 8;
    match version {
        0 => chk == 1 && matches!(prog_bytes, 20 | 32),
        1..=16 => chk == 0x2bc8_30a3 && (2..=40).contains(&prog_bytes),
        _ => false,
    }
}

/// Keccak-256 (the pre-standard SHA-3 padding Ethereum uses) of a message shorter than
/// one 136-byte block.
fn keccak256_short(msg: &[u8]) -> [u8; 32] {
    const RC: [u64; 24] = [
        0x0000_0000_0000_0001,
        0x0000_0000_0000_8082,
        0x8000_0000_0000_808a,
        0x8000_0000_8000_8000,
        0x0000_0000_0000_808b,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8009,
        0x0000_0000_0000_008a,
        0x0000_0000_0000_0088,
        0x0000_0000_8000_8009,
        0x0000_0000_8000_000a,
        0x0000_0000_8000_808b,
        0x8000_0000_0000_008b,
        0x8000_0000_0000_8089,
        0x8000_0000_0000_8003,
        0x8000_0000_0000_8002,
        0x8000_0000_0000_0080,
        0x0000_0000_0000_800a,
        0x8000_0000_8000_000a,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8080,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8008,
    ];
    const ROT: [u32; 25] = [
        0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56,
        14,
    ];
    let mut block = [0u8; 136];
    let n = msg.len().min(135);
    block[..n].copy_from_slice(&msg[..n]);
    block[n] ^= 0x01;
    block[135] ^= 0x80;
    let mut a = [0u64; 25];
    for (k, lane) in a.iter_mut().take(17).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&block[8 * k..8 * k + 8]);
        *lane = u64::from_le_bytes(w);
    }
    for rc in RC {
        let mut c = [0u64; 5];
        for x in 0..5 {
            c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
        }
        for x in 0..5 {
            let d = c[(x + 4) % 5] ^ c[(x + 1) % 5].rotate_left(1);
            for y in 0..5 {
                a[x + 5 * y] ^= d;
            }
        }
        let mut b = [0u64; 25];
        for x in 0..5 {
            for y in 0..5 {
                b[y + 5 * ((2 * x + 3 * y) % 5)] = a[x + 5 * y].rotate_left(ROT[x + 5 * y]);
            }
        }
        for x in 0..5 {
            for y in 0..5 {
                a[x + 5 * y] = b[x + 5 * y] ^ (!b[(x + 1) % 5 + 5 * y] & b[(x + 2) % 5 + 5 * y]);
            }
        }
        a[0] ^= rc;
    }
    let mut out = [0u8; 32];
    for k in 0..4 {
        out[8 * k..8 * k + 8].copy_from_slice(&a[k].to_le_bytes());
    }
    out
}

/// Ethereum address body (40 hex digits after `0x`): all-lowercase and all-uppercase are
/// accepted as written; mixed case must carry a valid EIP-55 checksum.
pub(crate) fn eth_eip55(hex: &[u8]) -> bool {
    if hex.len() != 40 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let upper = hex.iter().any(u8::is_ascii_uppercase);
    let lower = hex.iter().any(u8::is_ascii_lowercase);
    if !(upper && lower) {
        return true;
    }
    let lc: Vec<u8> = hex.iter().map(u8::to_ascii_lowercase).collect();
    let h = keccak256_short(&lc);
    hex.iter().enumerate().all(|(k, &c)| {
        if !c.is_ascii_alphabetic() {
            return true;
        }
        let byte = h.get(k / 2).copied().unwrap_or(0);
        let nib = if k % 2 == 0 { byte >> 4 } else { byte & 15 };
        (nib >= 8) == c.is_ascii_uppercase()
    })
}

/// The checksum of an EU VAT number's national part, where the format has one; `None`
/// for a country whose checksum writ does not verify (format rules only).
fn vat_checksum(cc: &[u8], d: &[u8]) -> Option<bool> {
    Some(match cc {
        b"DE" => d.first() != Some(&b'0') && iso7064_11_10(d),
        b"IT" => luhn_digits(d),
        b"BE" => {
            let body = num(d.get(..8).unwrap_or_default());
            97 - body % 97 == num(d.get(8..).unwrap_or_default())
        }
        b"FR" => {
            let key = num(d.get(..2).unwrap_or_default());
            let siren = d.get(2..).unwrap_or_default();
            (12 + 3 * (num(siren) % 97)) % 97 == key && luhn_digits(siren)
        }
        b"PL" => {
            let s = weighted(d, &[6, 5, 7, 2, 3, 4, 5, 6, 7]) % 11;
            s != 10 && d.get(9).is_some_and(|&c| dv(c) == s)
        }
        b"DK" => weighted(d, &[2, 7, 6, 5, 4, 3, 2, 1]).is_multiple_of(11),
        b"FI" => {
            let c = match 11 - weighted(d, &[7, 9, 10, 5, 8, 4, 2]) % 11 {
                11 => 0,
                10 => return Some(false),
                c => c,
            };
            d.get(7).is_some_and(|&x| dv(x) == c)
        }
        b"SE" => d.ends_with(b"01") && luhn_digits(d.get(..10).unwrap_or_default()),
        b"AT" => {
            let body = d.get(1..).unwrap_or_default();
            let mut r = 0u32;
            for (k, &c) in body.iter().take(7).enumerate() {
                let v = dv(c);
                r += if k % 2 == 1 {
                    (2 * v) / 10 + (2 * v) % 10
                } else {
                    v
                };
            }
            body.get(7)
                .is_some_and(|&c| (10 - (r + 4) % 10) % 10 == dv(c))
        }
        b"NL" => {
            let digits = d.get(..9).unwrap_or_default();
            let classic = {
                let s = weighted(digits, &[9, 8, 7, 6, 5, 4, 3, 2]);
                let c = s % 11;
                c != 10 && digits.get(8).is_some_and(|&x| dv(x) == c)
            };
            // Sole traders since 2020: ISO 7064 mod 97-10 over `NL` + the whole number.
            let mut rem = 0u32;
            for &c in b"NL".iter().chain(d) {
                let v = if c.is_ascii_digit() {
                    dv(c)
                } else {
                    u32::from(c - b'A') + 10
                };
                rem = if v >= 10 {
                    (rem * 100 + v) % 97
                } else {
                    (rem * 10 + v) % 97
                };
            }
            classic || rem == 1
        }
        _ => return None,
    })
}

/// EU VAT identification number (without spaces): a member-state prefix and that state's
/// national format. Checksums are verified for AT, BE, DE, DK, FI, FR, IT, NL, PL and SE;
/// the other states' numbers are accepted on their format alone.
pub(crate) fn eu_vat(s: &[u8]) -> bool {
    let (Some(cc), Some(d)) = (s.get(..2), s.get(2..)) else {
        return false;
    };
    let digits = |n: usize| d.len() == n && all_digits(d);
    let format = match cc {
        b"AT" => {
            d.len() == 9 && d.first() == Some(&b'U') && all_digits(d.get(1..).unwrap_or_default())
        }
        b"BE" => digits(10) && matches!(d.first(), Some(b'0' | b'1')),
        b"DE" | b"EL" | b"PT" | b"EE" => digits(9),
        b"DK" | b"FI" | b"LU" | b"MT" | b"SI" | b"HU" => digits(8),
        b"FR" => digits(11),
        b"IT" | b"LV" | b"HR" => digits(11),
        b"NL" => {
            d.len() == 12
                && all_digits(d.get(..9).unwrap_or_default())
                && d.get(9) == Some(&b'B')
                && all_digits(d.get(10..).unwrap_or_default())
        }
        b"PL" | b"SK" => digits(10),
        b"SE" => digits(12),
        b"ES" => {
            d.len() == 9
                && d.iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                && all_digits(d.get(1..8).unwrap_or_default())
                && !(d.first().is_some_and(u8::is_ascii_digit)
                    && d.last().is_some_and(u8::is_ascii_digit))
        }
        b"IE" => {
            (8..=9).contains(&d.len())
                && all_digits(d.get(..7).unwrap_or_default())
                && d.get(7..)
                    .unwrap_or_default()
                    .iter()
                    .all(u8::is_ascii_uppercase)
        }
        b"CZ" => (8..=10).contains(&d.len()) && all_digits(d),
        b"BG" => (9..=10).contains(&d.len()) && all_digits(d),
        b"LT" => matches!(d.len(), 9 | 12) && all_digits(d),
        b"RO" => (2..=10).contains(&d.len()) && all_digits(d) && d.first() != Some(&b'0'),
        b"CY" => {
            d.len() == 9
                && all_digits(d.get(..8).unwrap_or_default())
                && d.last().is_some_and(u8::is_ascii_uppercase)
        }
        _ => false,
    };
    format && vat_checksum(cc, d).unwrap_or(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A checksum and a value to try it on.
    type Case = (fn(&[u8]) -> bool, &'static str);

    #[test]
    fn published_examples_pass_and_one_digit_off_fails() {
        let ok: &[Case] = &[
            (verhoeff, "2363"),
            (aba, "011000015"),
            (npi, "1234567893"),
            (nhs, "9434765919"),
            (de_tax_id, "86095742719"),
            (es_dni, "12345678Z"),
            (es_dni, "X1234567L"),
            (it_codice_fiscale, "RSSMRA85T10A562S"),
            (nl_bsn, "111222333"),
            (pl_pesel, "44051401359"),
            (se_personnummer, "8112189876"),
            (fi_hetu, "131052-308T"),
            (ca_sin, "130692544"),
            (au_tfn, "123456782"),
            (sg_nric, "S1234567D"),
            (
                mrz_td3_line2,
                "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
            ),
            (btc_base58, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
            (btc_base58, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"),
            (btc_bech32, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"),
            (
                btc_bech32,
                "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297",
            ),
            (eth_eip55, "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            (eu_vat, "DE136695976"),
            (eu_vat, "IT00743110157"),
            (eu_vat, "BE0403170701"),
            (eu_vat, "NL004495445B01"),
        ];
        let failed: Vec<&str> = ok
            .iter()
            .filter(|(f, v)| !f(v.as_bytes()))
            .map(|(_, v)| *v)
            .collect();
        assert!(failed.is_empty(), "rejected: {failed:?}");
        let bad: &[Case] = &[
            (verhoeff, "2364"),
            (aba, "011000016"),
            (npi, "1234567894"),
            (nhs, "9434765918"),
            (es_dni, "12345678A"),
            (it_codice_fiscale, "RSSMRA85T10A562T"),
            (nl_bsn, "111222334"),
            (pl_pesel, "44051401358"),
            (fi_hetu, "131052-308U"),
            (ca_sin, "130692545"),
            (sg_nric, "S1234567A"),
            (btc_base58, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"),
            (btc_bech32, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdr"),
            (eth_eip55, "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            (eu_vat, "DE136695977"),
        ];
        let passed: Vec<&str> = bad
            .iter()
            .filter(|(f, v)| f(v.as_bytes()))
            .map(|(_, v)| *v)
            .collect();
        assert!(passed.is_empty(), "accepted: {passed:?}");
    }
}
