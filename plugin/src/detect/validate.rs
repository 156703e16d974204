//! Checksums and range rules that turn a pattern-shaped candidate into a confirmed value.
//!
//! These are shared by the built-in scanners and by custom detectors that name a validator
//! (`validate luhn`), so a policy's own card-like pattern gets the same false-positive
//! filtering as the built-in one.

/// Luhn (mod 10) over ASCII digits; any non-digit makes the input invalid.
///
/// Why: payment cards carry a Luhn check digit, which rejects 90% of random digit runs.
pub fn luhn_digits(digits: &[u8]) -> bool {
    if digits.len() < 2 {
        return false;
    }
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether the leading digits of a 13–19 digit number are an issuer prefix (IIN) of a
/// card network that issues numbers of that length.
///
/// Why: a Luhn-valid run of digits is common by chance (one in ten); requiring a real
/// network prefix and length removes most order numbers and phone-like runs.
pub fn known_iin(digits: &[u8]) -> bool {
    let len = digits.len();
    let p = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    let (p1, p2, p3, p4, p6) = (p(1), p(2), p(3), p(4), p(6));
    // Visa
    (p1 == 4 && matches!(len, 13 | 16 | 19))
        // Mastercard
        || ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16
        // American Express
        || matches!(p2, 34 | 37) && len == 15
        // Diners Club
        || ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && (14..=19).contains(&len)
        // Discover
        || (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len)
        // JCB
        || (3528..=3589).contains(&p4) && (16..=19).contains(&len)
        // UnionPay
        || p2 == 62 && (16..=19).contains(&len)
        // Maestro
        || (p2 == 50 || (56..=69).contains(&p2)) && (13..=19).contains(&len)
}

/// ISO 13616 IBAN lengths by country code (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], u8)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The IBAN length for a two-letter country code, if the country uses IBANs.
pub fn iban_length(cc: [u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == cc)
        .map(|&(_, l)| usize::from(l))
}

/// ISO 13616 / ISO 7064 mod 97-10 over a compact uppercase IBAN (no spaces): moves the
/// first four characters to the end, maps letters to 10..35 and checks the remainder is 1.
pub fn iban_mod97(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in compact.iter().skip(4).chain(compact.iter().take(4)) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// Full IBAN check of a compact uppercase IBAN: country, per-country length, check
/// digits and mod 97.
pub fn iban_compact(compact: &[u8]) -> bool {
    let (Some(&a), Some(&b)) = (compact.first(), compact.get(1)) else {
        return false;
    };
    let digits_ok = compact
        .get(2..4)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    iban_length([a, b]) == Some(compact.len()) && digits_ok && iban_mod97(compact)
}

/// SSA rules for a bare 9-digit US Social Security number split as area-group-serial:
/// area 000, 666 and 900–999, group 00 and serial 0000 were never issued as SSNs. Used
/// where the digits carry no separators, so false positives must stay rare.
pub fn ssn_parts(area: u32, group: u32, serial: u32) -> bool {
    area < 900 && taxpayer_id_parts(area, group, serial)
}

/// Any US taxpayer identifier (SSN, ITIN, ATIN) written with separators: every area except
/// 000 and 666 (the 9xx area holds real ITINs and is where synthetic test data lives), with
/// group 00 and serial 0000 excluded.
pub fn taxpayer_id_parts(area: u32, group: u32, serial: u32) -> bool {
    area != 0 && area != 666 && group != 0 && serial != 0
}

/// IRS rules for an Individual Taxpayer Identification Number: area 9xx and group 50–65,
/// 70–88, 90–92 or 94–99.
pub fn itin_parts(area: u32, group: u32, serial: u32) -> bool {
    (900..=999).contains(&area)
        && matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99)
        && serial != 0
}

/// Parses 1–3 ASCII digits as a decimal number (used for SSN and octet parts).
pub(crate) fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    Some(v)
}

/// Collects the ASCII digits of `s`, allowing only the given separators between them.
fn digits_only(s: &str, seps: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len().min(max));
    for &c in s.as_bytes() {
        if c.is_ascii_digit() {
            out.push(c);
            if out.len() > max {
                return None;
            }
        } else if !seps.contains(&c) {
            return None;
        }
    }
    Some(out)
}

/// The named checksum validators custom detectors may use with `validate NAME`; every
/// built-in detector name is accepted as well (the value must be exactly one such match).
pub const VALIDATORS: &[&str] = &["luhn", "iban", "mod97", "ssn"];

/// A validator by name, for the validators in [`VALIDATORS`].
pub(crate) fn checksum(name: &str, s: &str) -> Option<bool> {
    Some(match name {
        "luhn" => digits_only(s, b" -", 32).is_some_and(|d| d.len() >= 2 && luhn_digits(&d)),
        "iban" | "mod97" => {
            let compact: Vec<u8> = s
                .bytes()
                .filter(|&c| c != b' ')
                .map(|c| c.to_ascii_uppercase())
                .collect();
            if name == "iban" {
                iban_compact(&compact)
            } else {
                iban_mod97(&compact)
            }
        }
        "ssn" => digits_only(s, b" -", 9).is_some_and(|d| {
            let parts = if s.len() == 9 {
                ssn_parts
            } else {
                taxpayer_id_parts
            };
            d.len() == 9
                && match (
                    d.get(0..3).and_then(number),
                    d.get(3..5).and_then(number),
                    d.get(5..9).and_then(number),
                ) {
                    (Some(a), Some(g), Some(s)) => parts(a, g, s),
                    _ => false,
                }
        }),
        _ => return None,
    })
}
