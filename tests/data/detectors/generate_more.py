"""Generators for the detectors added in issue 10 (national identifiers, bank and wallet
formats, more credentials). Imported by `generate.py`, which seeds `R` per detector.

Every true value is synthetic: random digits completed with the format's check digit, so
no value belongs to a real person or account. A generator returns (pos, neg); an item is
either a value (inserted into a sentence as is) or a pair (value, shown) where `shown` is
the text put into the sentence around the value, e.g. a context keyword before a bare
number (`NHS 943 476 5919`, value `943 476 5919`).
"""

import base64
import hashlib
import string

R = None  # set by generate.py


def digits(n):
    return "".join(R.choice(string.digits) for _ in range(n))


def alnum(n, alphabet=string.ascii_letters + string.digits):
    return "".join(R.choice(alphabet) for _ in range(n))


UP = string.ascii_uppercase
HEXL = "0123456789abcdef"
B64URL = string.ascii_letters + string.digits + "-_"
B64 = string.ascii_letters + string.digits + "+/"


def luhn_ok(num):
    total = 0
    for k, ch in enumerate(reversed(num)):
        d = int(ch)
        if k % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(body):
    for c in string.digits:
        if luhn_ok(body + c):
            return c
    raise AssertionError


def bump(s, k=0):
    """The same value with its last digit changed (a bad check digit)."""
    for i in range(len(s) - 1, -1, -1):
        if s[i].isdigit():
            return s[:i] + str((int(s[i]) + 1 + k % 8) % 10) + s[i + 1:]
    raise AssertionError


def grp(num, sizes, sep):
    out, i = [], 0
    for s in sizes:
        out.append(num[i:i + s])
        i += s
    return sep.join(out)


def kw(words, pos_values):
    return [(v, R.choice(words) + " " + v) for v in pos_values]


def retry(make, ok):
    while True:
        v = make()
        if ok(v):
            return v


# ------------------------------------------------------------------ US

EIN_BAD = {0, 7, 8, 9, 17, 18, 19, 28, 29, 49, 69, 70, 78, 79, 89, 96, 97}


def us_ein():
    good = [p for p in range(10, 100) if p not in EIN_BAD]
    pos = ["%02d-%s" % (R.choice(good), digits(7)) for _ in range(30)]
    neg = ["%02d-%s" % (p, digits(7)) for p in sorted(EIN_BAD - {0})[:15]]
    neg += ["%02d%s" % (R.choice(good), digits(7)) for _ in range(5)]  # bare 9 digits
    neg += ["12-345678", "12-34567890", "ab12-3456789", "12-3456789x", "12 3456789", "12/3456789"]
    return pos, neg


def us_passport():
    vals = [digits(9) for _ in range(15)] + [R.choice(UP) + digits(8) for _ in range(15)]
    pos = kw(["passport", "Passport no.", "PASSPORT:", "passport number"], vals)
    neg = [digits(9) for _ in range(8)]  # no keyword
    neg += [("", "passport " + digits(8)), ("", "passport " + digits(10)),
            ("", "passport " + R.choice(UP) + digits(7)), ("", "passport AB" + digits(7)),
            ("", "passports are due in 123456789x"), ("", "passport office 12345")]
    return pos, neg


def aba_ok(d):
    p = int(d[:2])
    prefix = p <= 12 or 21 <= p <= 32 or 61 <= p <= 72 or p == 80
    w = [3, 7, 1] * 3
    return prefix and sum(int(c) * x for c, x in zip(d, w)) % 10 == 0


def aba_make():
    pre = R.choice(list(range(0, 13)) + list(range(21, 33)) + list(range(61, 73)) + [80])
    while True:
        d = "%02d" % pre + digits(7)
        if aba_ok(d):
            return d


def us_aba_routing():
    pos = kw(["routing", "Routing number", "ABA", "RTN:", "ACH routing", "transit no."],
             [aba_make() for _ in range(30)])
    neg = [aba_make() for _ in range(8)]  # no keyword
    for k in range(10):
        neg.append(("", "routing " + bump(aba_make(), k)))
    for _ in range(5):  # checksum right, prefix never assigned
        d = retry(lambda: "%02d" % R.choice([13, 19, 40, 55, 90]) + digits(7),
                  lambda d: sum(int(c) * x for c, x in zip(d, [3, 7, 1] * 3)) % 10 == 0)
        neg.append(("", "ABA " + d))
    neg += [("", "routing 12345678"), ("", "routing 0110000150")]
    return pos, neg


def npi_make():
    body = R.choice("12") + digits(8)
    for c in string.digits:
        if luhn_ok("80840" + body + c):
            return body + c
    raise AssertionError


def us_npi():
    pos = kw(["NPI", "NPI:", "provider NPI", "npi"], [npi_make() for _ in range(30)])
    neg = [npi_make() for _ in range(6)]
    neg += [("", "NPI " + bump(npi_make(), k)) for k in range(10)]
    neg += [("", "NPI 3" + npi_make()[1:]), ("", "NPI " + npi_make()[:9]), ("", "NPI " + npi_make() + "1")]
    return pos, neg


MBI_L = [c for c in UP if c not in "SLOIBZ"]


def mbi_make():
    an = MBI_L + list(string.digits)
    s = (R.choice("123456789") + R.choice(MBI_L) + R.choice(an) + R.choice(string.digits) +
         R.choice(MBI_L) + R.choice(an) + R.choice(string.digits) + R.choice(MBI_L) +
         R.choice(MBI_L) + digits(2))
    return s


def us_mbi():
    pos = []
    for k in range(30):
        m = mbi_make()
        pos.append(m[:4] + "-" + m[4:7] + "-" + m[7:] if k % 3 == 0 else m)
    neg = []
    for k in range(20):
        m = mbi_make()
        bad = R.choice("SLOIBZ")
        pos_ = R.choice([1, 4, 7, 8])
        neg.append(m[:pos_] + bad + m[pos_ + 1:])
    neg += ["0" + mbi_make()[1:], mbi_make()[:10], mbi_make() + "9", "x" + mbi_make(),
            "1EG4-TE5MK73"]
    return pos, neg


# ------------------------------------------------------------------ UK

NINO_BAD1 = set("DFIQUV")
NINO_BAD2 = set("DFIQUVO")
NINO_BAD_PAIRS = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def nino_make():
    while True:
        a, b = R.choice(UP), R.choice(UP)
        if a in NINO_BAD1 or b in NINO_BAD2 or a + b in NINO_BAD_PAIRS:
            continue
        return a + b, digits(6), R.choice("ABCD")


def uk_nino():
    pos = []
    for k in range(30):
        p, d, s = nino_make()
        pos.append(p + d + s if k % 2 else "%s %s %s %s %s" % (p, d[:2], d[2:4], d[4:], s))
    neg = []
    for pair in ["GB", "BG", "NK", "TN", "ZZ", "DA", "AD", "QQ", "AO", "VA"]:
        neg.append(pair + digits(6) + "A")
    for _ in range(5):
        p, d, _s = nino_make()
        neg.append(p + d + R.choice("EFXZ"))
    neg += ["AB12345C", "AB1234567C", "ab123456c", "XAB123456C", "AB 123456 C"]
    return pos, neg


def nhs_make():
    while True:
        d = digits(9)
        s = sum(int(c) * w for c, w in zip(d, range(10, 1, -1)))
        c = 11 - s % 11
        if c == 11:
            c = 0
        if c == 10:
            continue
        return d + str(c)


def uk_nhs():
    vals = []
    for k in range(30):
        n = nhs_make()
        vals.append(grp(n, [3, 3, 4], " ") if k % 3 == 0 else grp(n, [3, 3, 4], "-") if k % 3 == 1 else n)
    pos = kw(["NHS", "NHS number", "NHS no:", "nhs"], vals)
    neg = [nhs_make() for _ in range(6)]
    neg += [("", "NHS " + bump(nhs_make(), k)) for k in range(10)]
    neg += [("", "NHS " + nhs_make()[:9]), ("", "NHS 943-476 5919")]
    return pos, neg


def uk_bank_account():
    pos = ["%s-%s-%s %s" % (digits(2), digits(2), digits(2), digits(8)) for _ in range(30)]
    neg = ["%s-%s-%s %s" % (digits(2), digits(2), digits(2), digits(7)) for _ in range(5)]
    neg += ["%s-%s-%s %s" % (digits(2), digits(2), digits(2), digits(9)) for _ in range(5)]
    neg += ["%s%s%s %s" % (digits(2), digits(2), digits(2), digits(8)) for _ in range(3)]
    neg += ["12-34-56", "12-34-567 12345678", "12.34.56 12345678", "12-34-56-12345678"]
    return pos, neg


# ------------------------------------------------------------------ EU

def iso7064(body):
    product = 10
    for c in body:
        s = (int(c) + product) % 10
        if s == 0:
            s = 10
        product = (s * 2) % 11
    return str((11 - product) % 10)


def de_tax_make():
    while True:
        first = R.choice("123456789")
        rest = list(first + digits(9))
        counts = {c: rest.count(c) for c in set(rest)}
        rep = [c for c, n in counts.items() if n >= 2]
        if len(rep) != 1 or counts[rep[0]] > 3:
            continue
        if counts[rep[0]] == 3 and rep[0] * 3 in "".join(rest):
            continue
        body = "".join(rest)
        return body + iso7064(body)


def de_tax_id():
    vals = []
    for k in range(30):
        v = de_tax_make()
        vals.append(grp(v, [2, 3, 3, 3], " ") if k % 4 == 0 else v)
    pos = kw(["Steuer-ID", "Steuer-IdNr.", "IdNr", "TIN:", "Steueridentifikationsnummer"], vals)
    neg = [de_tax_make() for _ in range(6)]
    neg += [("", "Steuer-ID " + bump(de_tax_make(), k)) for k in range(8)]
    neg += [("", "IdNr 0" + de_tax_make()[1:]), ("", "IdNr 12345678903"), ("", "TIN 11111111111")]
    return pos, neg


def nir_make():
    while True:
        body = R.choice("12") + digits(2) + "%02d" % R.randint(1, 12) + digits(8)
        key = 97 - int(body) % 97
        return body + "%02d" % key


def fr_nir():
    pos = []
    for k in range(30):
        v = nir_make()
        pos.append(grp(v, [1, 2, 2, 2, 3, 3, 2], " ") if k % 2 else v)
    neg = [bump(nir_make(), k) for k in range(12)]
    neg += ["3" + nir_make()[1:]]
    for _ in range(4):
        body = R.choice("12") + digits(2) + "13" + digits(8)
        neg.append(body + "%02d" % (97 - int(body) % 97))
    neg += [nir_make()[:14], nir_make() + "1"]
    return pos, neg


DNI = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni():
    pos = []
    for k in range(30):
        if k % 3 == 2:
            p = R.choice("XYZ")
            n = digits(7)
            pos.append(p + n + DNI[int(str("XYZ".index(p)) + n) % 23])
        else:
            n = digits(8)
            pos.append(n + ("-" if k % 5 == 0 else "") + DNI[int(n) % 23])
    neg = []
    for _ in range(15):
        n = digits(8)
        neg.append(n + R.choice([c for c in DNI if c != DNI[int(n) % 23]]))
    neg += ["W1234567A", digits(7) + "Z", digits(9) + "Z", "x" + digits(8) + "T", "12345678z"]
    return pos, neg


CF_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]


def cf_check(s):
    t = 0
    for k, c in enumerate(s):
        v = int(c) if c.isdigit() else ord(c) - 65
        t += CF_ODD[v] if k % 2 == 0 else v
    return chr(65 + t % 26)


def cf_make(omocodia=False):
    s = (alnum(6, UP) + digits(2) + R.choice("ABCDEHLMPRST") + "%02d" % R.choice(list(range(1, 32)) + list(range(41, 72))) +
         R.choice(UP) + digits(3))
    if omocodia:
        k = R.choice([14, 13, 12])
        s = s[:k] + "LMNPQRSTUV"[int(s[k])] + s[k + 1:]
    return s + cf_check(s)


def it_codice_fiscale():
    pos = [cf_make(k % 5 == 0) for k in range(30)]
    neg = []
    for _ in range(15):
        v = cf_make()
        neg.append(v[:-1] + R.choice([c for c in UP if c != v[-1]]))
    for _ in range(3):
        v = cf_make()
        neg.append(v[:8] + "F" + v[9:])  # month letter F does not exist
    neg += [cf_make()[:15], cf_make().lower(), "X" + cf_make()]
    return pos, neg


def bsn_ok(d):
    s = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1))) - int(d[8])
    return s > 0 and s % 11 == 0


def nl_bsn():
    vals = [retry(lambda: digits(9), bsn_ok) for _ in range(30)]
    vals = [grp(v, [4, 2, 3], ".") if k % 5 == 0 else v for k, v in enumerate(vals)]
    pos = kw(["BSN", "BSN:", "burgerservicenummer", "sofinummer"], vals)
    neg = [retry(lambda: digits(9), bsn_ok) for _ in range(6)]
    neg += [("", "BSN " + retry(lambda: digits(9), lambda d: not bsn_ok(d))) for _ in range(10)]
    neg += [("", "BSN 12345678"), ("", "BSN 000000000")]
    return pos, neg


def pesel_make():
    y = R.randint(1900, 2099)
    m = R.randint(1, 12)
    d = R.randint(1, 28)
    mm = m + (20 if y >= 2000 else 0)
    body = "%02d%02d%02d" % (y % 100, mm, d) + digits(4)
    w = [1, 3, 7, 9, 1, 3, 7, 9, 1, 3]
    s = sum(int(c) * x for c, x in zip(body, w))
    return body + str((10 - s % 10) % 10)


def pl_pesel():
    pos = kw(["PESEL", "PESEL:", "nr PESEL"], [pesel_make() for _ in range(30)])
    neg = [pesel_make() for _ in range(6)]
    neg += [("", "PESEL " + bump(pesel_make(), k)) for k in range(10)]
    neg += [("", "PESEL 85133012345"), ("", "PESEL " + pesel_make()[:10])]
    return pos, neg


def pnr_make():
    y = R.randint(0, 99)
    m = R.randint(1, 12)
    d = R.randint(1, 28) + (60 if R.random() < 0.1 else 0)
    body = "%02d%02d%02d" % (y, m, d) + digits(3)
    return body + luhn_digit(body)


def se_personnummer():
    pos = []
    for k in range(30):
        v = pnr_make()
        if k % 4 == 0:
            pos.append(R.choice(["19", "20"]) + v[:6] + "-" + v[6:])
        else:
            pos.append(v[:6] + "-" + v[6:])
    neg = []
    for k in range(12):
        v = bump(pnr_make(), k)
        neg.append(v[:6] + "-" + v[6:])
    neg += ["851399-1234", "850230-1232", pnr_make(), "8507099805-1", "17" + pnr_make()[:6] + "-" + pnr_make()[6:]]
    return pos, neg


HETU_Q = "0123456789ABCDEFHJKLMNPRSTUVWXY"


def hetu_make():
    d, m, y = R.randint(1, 28), R.randint(1, 12), R.randint(0, 99)
    sign = R.choice("-A+YXBC")
    n = R.randint(2, 899)
    v = int("%02d%02d%02d%03d" % (d, m, y, n))
    return "%02d%02d%02d%s%03d%s" % (d, m, y, sign, n, HETU_Q[v % 31])


def fi_hetu():
    pos = [hetu_make() for _ in range(30)]
    neg = []
    for _ in range(15):
        v = hetu_make()
        neg.append(v[:-1] + R.choice([c for c in HETU_Q if c != v[-1]]))
    neg += ["321052-308T", "131052Q308T", "131052-001T", "131052-30T", "x131052-308T"]
    return pos, neg


def be_make():
    y, m, d = R.randint(0, 99), R.randint(1, 12), R.randint(1, 28)
    body = "%02d%02d%02d%03d" % (y, m, d, R.randint(1, 997))
    c = 97 - int(body) % 97 if R.random() < 0.5 else 97 - (2000000000 + int(body)) % 97
    v = body + "%02d" % c
    return "%s.%s.%s-%s.%s" % (v[:2], v[2:4], v[4:6], v[6:9], v[9:])


def be_national_number():
    pos = [be_make() for _ in range(30)]
    neg = [bump(be_make(), k) for k in range(12)]
    neg = [v for v in neg if not be_ok_any(v)]
    neg += ["85.07.30-033", "85.13.30-033.28", "85.07.30.033.28", "85-07-30-033-28"]
    return pos, neg


def be_ok_any(v):
    d = v.replace(".", "").replace("-", "")
    body, c = int(d[:9]), int(d[9:])
    return 97 - body % 97 == c or 97 - (2000000000 + body) % 97 == c


def vat_de():
    while True:
        body = R.choice("123456789") + digits(7)
        return "DE" + body + iso7064(body)


def vat_it():
    body = digits(10)
    return "IT" + body + luhn_digit(body)


def vat_be():
    body = R.choice("01") + digits(7)
    return "BE" + body + "%02d" % (97 - int(body) % 97)


def vat_fr():
    siren8 = digits(8)
    siren = siren8 + luhn_digit(siren8)
    key = (12 + 3 * (int(siren) % 97)) % 97
    return "FR%02d%s" % (key, siren)


def vat_pl():
    while True:
        d = digits(9)
        s = sum(int(c) * w for c, w in zip(d, [6, 5, 7, 2, 3, 4, 5, 6, 7])) % 11
        if s != 10:
            return "PL" + d + str(s)


def vat_nl():
    while True:
        d = digits(8)
        s = sum(int(c) * w for c, w in zip(d, range(9, 1, -1))) % 11
        if s != 10:
            return "NL" + d + str(s) + "B" + "%02d" % R.randint(1, 99)


def vat_at():
    while True:
        d = digits(7)
        r = 0
        for k, c in enumerate(d):
            v = int(c)
            r += (2 * v) // 10 + (2 * v) % 10 if k % 2 == 1 else v
        return "ATU" + d + str((10 - (r + 4) % 10) % 10)


def vat_dk():
    return "DK" + retry(lambda: digits(8), lambda d: sum(int(c) * w for c, w in zip(d, [2, 7, 6, 5, 4, 3, 2, 1])) % 11 == 0)


def vat_se():
    body = digits(9)
    return "SE" + body + luhn_digit(body) + "01"


def vat_es():
    return "ES" + R.choice("ABCDEFGHJ") + digits(7) + R.choice(string.digits + "ABCDEFGHIJ")


VAT_MAKERS = [vat_de, vat_it, vat_be, vat_fr, vat_pl, vat_nl, vat_at, vat_dk, vat_se, vat_es,
              lambda: "PT" + digits(9), lambda: "LU" + digits(8), lambda: "IE" + digits(7) + R.choice(UP)]


def eu_vat():
    pos = [VAT_MAKERS[k % len(VAT_MAKERS)]() for k in range(30)]
    neg = []
    for k in range(14):
        v = VAT_MAKERS[k % 9]()
        neg.append(bump(v[:-3] if v.startswith("NL") else v, k) + (v[-3:] if v.startswith("NL") else ""))
    neg += ["XX" + digits(9), "GB" + digits(9), "DE" + digits(8), "DE" + digits(10), "de" + digits(9),
            "USDE" + digits(9)]
    return pos, [v for v in neg if not v.startswith("DK")]


# ------------------------------------------------------------------ IN, CA, AU, SG

VD = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
      [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
      [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
      [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
VP = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
      [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
      [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]


def verhoeff_ok(n):
    c = 0
    for i, ch in enumerate(reversed(n)):
        c = VD[c][VP[i % 8][int(ch)]]
    return c == 0


def aadhaar_make():
    body = R.choice("23456789") + digits(10)
    for c in string.digits:
        if verhoeff_ok(body + c):
            return body + c
    raise AssertionError


def in_aadhaar():
    pos = [grp(aadhaar_make(), [4, 4, 4], R.choice(" -")) for _ in range(22)]
    pos += kw(["Aadhaar", "Aadhaar no.", "UID"], [aadhaar_make() for _ in range(8)])
    neg = [grp(bump(aadhaar_make(), k), [4, 4, 4], " ") for k in range(12)]
    neg = [v for v in neg if not verhoeff_ok(v.replace(" ", ""))]
    neg += [aadhaar_make() for _ in range(4)]  # bare, no keyword
    neg += [grp("1" + aadhaar_make()[1:], [4, 4, 4], " "), "2345 6789 012"]
    return pos, neg


def in_pan():
    pos = [alnum(3, UP) + R.choice("PCHFATBLJG") + R.choice(UP) + digits(4) + R.choice(UP) for _ in range(30)]
    neg = [alnum(3, UP) + R.choice("DEIKMNOQRSUVWXYZ") + R.choice(UP) + digits(4) + R.choice(UP) for _ in range(12)]
    neg += ["ABCPD1234", "ABCPD12345F", "abcpd1234f", "ABCPD1234FG", "1BCPD1234F"]
    return pos, neg


def sin_make():
    body = R.choice("1234567") + digits(7)
    return body + luhn_digit(body)


def ca_sin():
    pos = [grp(sin_make(), [3, 3, 3], R.choice(" -")) for _ in range(22)]
    pos += kw(["SIN", "SIN:", "social insurance number"], [sin_make() for _ in range(8)])
    neg = [grp(bump(sin_make(), k), [3, 3, 3], " ") for k in range(12)]
    b8 = "8" + digits(7)
    neg += [grp(b8 + luhn_digit(b8), [3, 3, 3], " "), sin_make(), sin_make(), "123 456 78"]
    return pos, neg


TFN_W = [1, 4, 3, 7, 5, 8, 6, 9, 10]


def tfn_ok(d):
    return sum(int(c) * w for c, w in zip(d, TFN_W)) % 11 == 0


def au_tfn():
    vals = [retry(lambda: digits(9), tfn_ok) for _ in range(30)]
    vals = [grp(v, [3, 3, 3], " ") if k % 2 else v for k, v in enumerate(vals)]
    pos = kw(["TFN", "TFN:", "tax file number"], vals)
    neg = [retry(lambda: digits(9), tfn_ok) for _ in range(5)]
    neg += [("", "TFN " + retry(lambda: digits(9), lambda d: not tfn_ok(d))) for _ in range(10)]
    neg += [("", "TFN 12345678")]
    return pos, neg


def medicare_make():
    body = R.choice("23456") + digits(7)
    s = sum(int(c) * w for c, w in zip(body, [1, 3, 7, 9, 1, 3, 7, 9]))
    return body + str(s % 10) + R.choice("123456789")


def au_medicare():
    pos = [grp(medicare_make(), [4, 5, 1], " ") for _ in range(20)]
    pos += [grp(medicare_make() + R.choice("123456789"), [4, 5, 1, 1], " ") for _ in range(3)]
    pos += kw(["Medicare", "Medicare card", "medicare no."], [medicare_make() for _ in range(7)])
    neg = []
    for k in range(12):
        m = medicare_make()
        bad = m[:8] + str((int(m[8]) + 1 + k % 8) % 10) + m[9]
        neg.append(grp(bad, [4, 5, 1], " "))
    neg += [grp("1" + medicare_make()[1:], [4, 5, 1], " "), medicare_make(), "2123 4567 1"]
    return pos, neg


def nric_make():
    p = R.choice("STFG")
    d = digits(7)
    s = sum(int(c) * w for c, w in zip(d, [2, 7, 6, 5, 4, 3, 2])) + (4 if p in "TG" else 0)
    table = "JZIHGFEDCBA" if p in "ST" else "XWUTRQPNMLK"
    return p + d + table[s % 11]


def sg_nric():
    pos = [nric_make() for _ in range(30)]
    neg = []
    for _ in range(14):
        v = nric_make()
        neg.append(v[:-1] + R.choice([c for c in "ABCDEFGHIJZ" if c != v[-1]]))
    neg += ["A1234567D", "S123456D", "S12345678D", "s1234567d", "XS1234567D"]
    return pos, neg


# ------------------------------------------------------------------ passports, wallets, MAC

def mrz_val(c):
    if c.isdigit():
        return int(c)
    if c == "<":
        return 0
    return ord(c) - 55


def mrz_cd(s):
    return str(sum(mrz_val(c) * [7, 3, 1][k % 3] for k, c in enumerate(s)) % 10)


def mrz_make():
    num = (alnum(R.randint(6, 9), UP + string.digits)).ljust(9, "<")
    nat = R.choice(["UTO", "D<<", "GBR", "FRA", "NLD", "CAN"])
    dob = "%02d%02d%02d" % (R.randint(0, 99), R.randint(1, 12), R.randint(1, 28))
    exp = "%02d%02d%02d" % (R.randint(24, 35), R.randint(1, 12), R.randint(1, 28))
    opt = (alnum(R.randint(0, 14), UP + string.digits)).ljust(14, "<")
    sex = R.choice("MF<")
    line = num + mrz_cd(num) + nat + dob + mrz_cd(dob) + sex + exp + mrz_cd(exp) + opt + mrz_cd(opt)
    comp = line[0:10] + line[13:20] + line[21:43]
    return line + mrz_cd(comp)


def passport_mrz():
    pos = []
    for k in range(30):
        v = mrz_make()
        if k % 3 == 0:
            line1 = ("P<" + v[10:13] + "ERIKSSON<<ANNA<MARIA").ljust(44, "<")
            pos.append((v, line1 + "\n" + v))
        else:
            pos.append(v)
    neg = []
    for k in range(15):
        v = mrz_make()
        i = R.choice([9, 19, 27, 43])
        neg.append(v[:i] + str((int(v[i]) + 1) % 10) + v[i + 1:])
    neg += [mrz_make()[:43], mrz_make() + "<", "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
            mrz_make().lower()]
    return pos, neg


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(b):
    n = int.from_bytes(b, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + out


def b58check(version):
    payload = bytes([version]) + bytes(R.getrandbits(8) for _ in range(20))
    chk = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return b58encode(payload + chk)


BECH = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_polymod(values):
    gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1ffffff) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def convertbits(data, frm, to):
    acc, bits, ret = 0, 0, []
    for v in data:
        acc = (acc << frm) | v
        bits += frm
        while bits >= to:
            bits -= to
            ret.append((acc >> bits) & ((1 << to) - 1))
    if bits:
        ret.append((acc << (to - bits)) & ((1 << to) - 1))
    return ret


def bech32_addr(version, prog_len):
    prog = bytes(R.getrandbits(8) for _ in range(prog_len))
    data = [version] + convertbits(prog, 8, 5)
    const = 1 if version == 0 else 0x2bc830a3
    hrp = [ord(c) >> 5 for c in "bc"] + [0] + [ord(c) & 31 for c in "bc"]
    pm = bech32_polymod(hrp + data + [0] * 6) ^ const
    chk = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return "bc1" + "".join(BECH[d] for d in data + chk)


def btc_address():
    pos = []
    for k in range(30):
        kind = k % 4
        if kind == 0:
            pos.append(b58check(0))
        elif kind == 1:
            pos.append(b58check(5))
        elif kind == 2:
            pos.append(bech32_addr(0, R.choice([20, 32])))
        else:
            v = bech32_addr(1, 32)
            pos.append(v.upper() if k % 8 == 3 else v)
    neg = []
    for _ in range(8):
        v = b58check(0)
        i = R.randint(5, len(v) - 2)
        neg.append(v[:i] + R.choice([c for c in B58 if c != v[i]]) + v[i + 1:])
    for _ in range(6):
        v = bech32_addr(0, 20)
        i = R.randint(5, len(v) - 2)
        neg.append(v[:i] + R.choice([c for c in BECH if c != v[i]]) + v[i + 1:])
    # Right checksum constant swapped: a v1 address with a bech32 (not bech32m) checksum.
    prog = bytes(R.getrandbits(8) for _ in range(32))
    data = [1] + convertbits(prog, 8, 5)
    hrp = [ord(c) >> 5 for c in "bc"] + [0] + [ord(c) & 31 for c in "bc"]
    pm = bech32_polymod(hrp + data + [0] * 6) ^ 1
    neg.append("bc1" + "".join(BECH[d] for d in data + [(pm >> 5 * (5 - i)) & 31 for i in range(6)]))
    neg += ["1" + alnum(20, B58), "bc1qshort", "tb1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "Bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]
    return pos, neg


def keccak256(data):
    try:
        from Crypto.Hash import keccak  # type: ignore
        h = keccak.new(digest_bits=256)
        h.update(data)
        return h.digest()
    except ImportError:
        pass
    RC = [0x1, 0x8082, 0x800000000000808a, 0x8000000080008000, 0x808b, 0x80000001, 0x8000000080008081,
          0x8000000000008009, 0x8a, 0x88, 0x80008009, 0x8000000a, 0x8000808b, 0x800000000000008b,
          0x8000000000008089, 0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x800a,
          0x800000008000000a, 0x8000000080008081, 0x8000000000008080, 0x80000001, 0x8000000080008008]
    ROT = [[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56], [27, 20, 39, 8, 14]]
    M = (1 << 64) - 1

    def rol(x, n):
        return ((x << n) | (x >> (64 - n))) & M if n else x
    rate = 136
    msg = bytearray(data) + b"\x01"
    while len(msg) % rate:
        msg += b"\0"
    msg[-1] |= 0x80
    A = [[0] * 5 for _ in range(5)]
    for off in range(0, len(msg), rate):
        blk = msg[off:off + rate]
        for i in range(rate // 8):
            A[i % 5][i // 5] ^= int.from_bytes(blk[8 * i:8 * i + 8], "little")
        for rc in RC:
            C = [A[x][0] ^ A[x][1] ^ A[x][2] ^ A[x][3] ^ A[x][4] for x in range(5)]
            D = [C[(x - 1) % 5] ^ rol(C[(x + 1) % 5], 1) for x in range(5)]
            A = [[A[x][y] ^ D[x] for y in range(5)] for x in range(5)]
            B = [[0] * 5 for _ in range(5)]
            for x in range(5):
                for y in range(5):
                    B[y][(2 * x + 3 * y) % 5] = rol(A[x][y], ROT[x][y])
            A = [[B[x][y] ^ ((~B[(x + 1) % 5][y]) & B[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
            A[0][0] ^= rc
    out = b""
    for i in range(4):
        out += A[i % 5][i // 5].to_bytes(8, "little")
    return out


def eip55(hex40):
    h = keccak256(hex40.encode()).hex()
    return "".join(c.upper() if c.isalpha() and int(h[i], 16) >= 8 else c for i, c in enumerate(hex40))


def eth_address():
    assert eip55("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed") == "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    pos = []
    for k in range(30):
        h = alnum(40, HEXL)
        pos.append("0x" + (eip55(h) if k % 3 else h))
    neg = []
    for _ in range(12):
        h = eip55(alnum(40, HEXL))
        letters = [i for i, c in enumerate(h) if c.isalpha()]
        i = R.choice(letters)
        neg.append("0x" + h[:i] + h[i].swapcase() + h[i + 1:])
    neg += ["0x" + alnum(39, HEXL), "0x" + alnum(41, HEXL), "0x" + alnum(39, HEXL) + "g", "x" + alnum(40, HEXL),
            "0y" + alnum(40, HEXL)]
    return pos, neg


def mac_address():
    pos = []
    for k in range(30):
        octs = [R.getrandbits(8) for _ in range(6)]
        octs[0] |= 0x0a  # a hex letter in the first pair
        h = "".join("%02x" % o for o in octs)
        h = h.upper() if k % 2 else h
        style = k % 3
        if style == 0:
            pos.append(":".join(h[i:i + 2] for i in range(0, 12, 2)))
        elif style == 1:
            pos.append("-".join(h[i:i + 2] for i in range(0, 12, 2)))
        else:
            pos.append(".".join(h[i:i + 4] for i in range(0, 12, 4)))
    neg = ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "FF-FF-FF-FF-FF-FF", "12:34:56:78:90:12",
           "0a:1b:2c:3d:4e", "0a:1b:2c:3d:4e:5f:6a", "0a:1b-2c:3d:4e:5f", "0a:1b:2c:3d:4e:5g",
           "0a1b.2c3d", "12:30:45", "0a1b.2c3d.4e5f.6a7b", "x0a:1b:2c:3d:4e:5f"]
    return pos, neg


# ------------------------------------------------------------------ secrets

def stripe_key():
    pos = [R.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]) + retry(lambda: alnum(R.choice([24, 32, 99])), lambda v: any(c.isdigit() for c in v) and any(c.isalpha() for c in v)) for _ in range(30)]
    neg = ["pk_live_" + alnum(24), "sk_live_" + alnum(20), "sk_prod_" + alnum(24), "xsk_live_" + alnum(24),
           "sk_live_", "sk-live-" + alnum(24), "the sk_live_ prefix", "sk_test_" + "a" * 30]
    return pos, neg


def google_api_key():
    pos = ["AIza" + alnum(35, B64URL) for _ in range(30)]
    neg = ["AIza" + alnum(34, B64URL), "AIza" + alnum(36, string.ascii_letters), "AIzb" + alnum(35), "aiza" + alnum(35),
           "xAIza" + alnum(35), "AIza is a prefix"]
    return pos, neg


def pem_body():
    body = base64.b64encode(bytes(R.getrandbits(8) for _ in range(R.choice([300, 900])))).decode()
    return "\\n".join(body[i:i + 64] for i in range(0, len(body), 64))


def gcp_service_account():
    pos = []
    for k in range(30):
        proj = "proj-" + alnum(6, string.ascii_lowercase)
        sp = " " if k % 2 else ""
        value = ('"type":%s"service_account",%s"project_id":%s"%s",%s"private_key_id":%s"%s",%s"private_key":%s"-----BEGIN PRIVATE KEY-----\\n%s\\n-----END PRIVATE KEY-----\\n"'
                 % (sp, sp, sp, proj, sp, sp, alnum(40, HEXL), sp, sp, pem_body()))
        shown = "{" + value + ',%s"client_email":%s"svc@%s.iam.gserviceaccount.com"}' % (sp, sp, proj)
        pos.append((value, shown))
    neg = ['{"type": "authorized_user", "private_key": "-----BEGIN PRIVATE KEY-----\\nabc\\n"}',
           '{"type": "service_account", "project_id": "p"}',
           '{"type": "service_account", "private_key": ""}',
           '{"type": "service_account", "private_key": null}',
           '"type": "service_accounts", "private_key": "-----BEGIN PRIVATE KEY-----"',
           'type: service_account private_key: none',
           '{"kind": "service_account", "private_key_id": "abc"}']
    return pos, neg


def azure_key():
    return alnum(86, B64) + "=="


def azure_storage_key():
    pos = []
    for k in range(30):
        if k % 2:
            pos.append("AccountKey=" + azure_key())
        else:
            acct = alnum(10, string.ascii_lowercase + string.digits)
            pos.append("DefaultEndpointsProtocol=https;AccountName=%s;AccountKey=%s;EndpointSuffix=core.windows.net" % (acct, azure_key()))
    neg = ["AccountKey=" + alnum(80, B64) + "==", "AccountKey=" + alnum(86, B64) + "=", "AccountKey=",
           "DefaultEndpointsProtocol=https;AccountName=foo;EndpointSuffix=core.windows.net",
           "DefaultEndpointsProtocol=https;AccountName=foo;AccountKey=short==",
           "accountkey=" + azure_key(), "AccountKeys are rotated monthly"]
    return pos, neg


def mixed(n):
    return retry(lambda: alnum(n), lambda v: any(c.isupper() for c in v) and any(c.islower() for c in v) and any(c.isdigit() for c in v))


def anthropic_key():
    pos = ["sk-ant-" + R.choice(["api03-", "admin01-"]) + mixed(R.choice([40, 80])) + alnum(R.choice([8, 13]), B64URL) + "AA" for _ in range(30)]
    neg = ["sk-ant-" + alnum(10), "sk-ant-", "sk-anthropic is a name", "xsk-ant-api03-" + mixed(60),
           "sk-ant-" + "a" * 40, "sk_ant_" + mixed(40)]
    return pos, neg


def huggingface_token():
    pos = ["hf_" + retry(lambda: alnum(34, string.ascii_letters), lambda v: any(c.isupper() for c in v) and any(c.islower() for c in v)) for _ in range(30)]
    neg = ["hf_" + alnum(33, string.ascii_letters), "hf_" + alnum(35, string.ascii_letters), "hf_" + "a" * 34,
           "hf_token", "hf_" + alnum(20) + "_" + alnum(13), "xhf_" + mixed(34)]
    return pos, neg


def npm_token():
    pos = ["npm_" + mixed(36) for _ in range(30)]
    neg = ["npm_" + mixed(35), "npm_" + mixed(37), "npm_install", "npm_" + "a" * 36, "xnpm_" + mixed(36)]
    return pos, neg


def pypi_token():
    pos = ["pypi-AgEIcHlwaS5vcmc" + alnum(R.choice([60, 130, 160]), B64URL) for _ in range(30)]
    neg = ["pypi-AgEIcHlwaS5vcmc" + alnum(20, B64URL), "pypi-" + alnum(80, B64URL), "pypi-AgEIcHlwaS5vcmc",
           "pypi-token is in the vault"]
    return pos, neg


def twilio_key():
    hx = lambda: retry(lambda: alnum(32, HEXL), lambda v: any(c.isdigit() for c in v) and any(c.isalpha() for c in v))
    pos = [R.choice(["SK", "AC"]) + hx() for _ in range(30)]
    neg = ["SK" + alnum(31, HEXL), "SK" + alnum(33, HEXL), "SK" + hx().upper(), "SX" + hx(), "ASK" + hx(),
           "AC" + alnum(32, "ghijklmnop")]
    return pos, neg


def sendgrid_key():
    pos = ["SG." + alnum(22, B64URL) + "." + alnum(43, B64URL) for _ in range(30)]
    neg = ["SG." + alnum(21, B64URL) + "." + alnum(43, B64URL), "SG." + alnum(22, B64URL) + "." + alnum(42, B64URL),
           "SG." + alnum(22, B64URL), "sg." + alnum(22, B64URL) + "." + alnum(43, B64URL), "SG.Singapore"]
    return pos, neg


PW_ALPHA = string.ascii_letters + string.digits + "#^*_+-@!"


def password():
    return retry(lambda: R.choice(string.ascii_letters) + alnum(R.randint(7, 20), PW_ALPHA) + R.choice(string.digits),
                 lambda v: "@" not in v[:1])


def database_url():
    schemes = ["postgres", "postgresql", "mysql", "mariadb", "mongodb", "mongodb+srv", "redis", "rediss", "amqp", "amqps"]
    pos = []
    for k in range(30):
        sch = schemes[k % len(schemes)]
        user = "" if sch.startswith("redis") and k % 2 else alnum(6, string.ascii_lowercase)
        pw = alnum(R.randint(8, 20), string.ascii_letters + string.digits + "-_~")
        host = R.choice(["db.internal", "10.0.0.5", "cluster0.example.net", "localhost"])
        port = R.choice(["", ":5432", ":3306", ":27017", ":6379"])
        path = R.choice(["", "/app", "/prod?sslmode=require", "/0"])
        pos.append("%s://%s:%s@%s%s%s" % (sch, user, pw, host, port, path))
    neg = ["postgres://user@db.internal/app", "postgres://db.internal:5432/app", "mysql://user:@db/app",
           "http://user:secret123@example.com/", "postgres:// user:pw@host", "redis://localhost:6379/0",
           "mongodb+srv://cluster0.example.net/test", "ftp://user:pass1234@files.example.com",
           "the postgres://URL goes here"]
    return pos, neg


def password_assignment():
    keys = ["password", "PASSWORD", "DB_PASSWORD", "passwd", "pwd", "secret", "client_secret", "api_key",
            "SECRET_KEY", "access_token", "auth_token", "Password"]
    pos = []
    for k in range(30):
        key = keys[k % len(keys)]
        pw = password()
        form = k % 5
        if form == 0:
            shown = "%s=%s" % (key, pw)
        elif form == 1:
            shown = "%s: %s" % (key, pw)
        elif form == 2:
            shown = '"%s": "%s"' % (key.lower(), pw)
        elif form == 3:
            shown = "%s = '%s'" % (key, pw)
        else:
            shown = "%s=%s;" % (key, pw)
        pos.append((pw, shown))
    neg = ["password=", "password: ****", "password=${DB_PASS}", "password: <your password>", "password=null",
           "password is required", "nopassword=abc123x", "the secret: remember this", "pwd=ab1", "mypassword=abc123x",
           "password=aaaaaaaa", "password: hunter", "secret: None", "passwords=abc123x!", "api_key = \"\"",
           "password = %(pw)s", "secret::value::123"]
    return pos, neg


MORE = {
    "us_ein": us_ein, "us_passport": us_passport, "us_aba_routing": us_aba_routing, "us_npi": us_npi,
    "us_mbi": us_mbi, "uk_nino": uk_nino, "uk_nhs": uk_nhs, "uk_bank_account": uk_bank_account,
    "de_tax_id": de_tax_id, "fr_nir": fr_nir, "es_dni": es_dni, "it_codice_fiscale": it_codice_fiscale,
    "nl_bsn": nl_bsn, "pl_pesel": pl_pesel, "se_personnummer": se_personnummer, "fi_hetu": fi_hetu,
    "be_national_number": be_national_number, "eu_vat": eu_vat, "in_aadhaar": in_aadhaar, "in_pan": in_pan,
    "ca_sin": ca_sin, "au_tfn": au_tfn, "au_medicare": au_medicare, "sg_nric": sg_nric,
    "passport_mrz": passport_mrz, "btc_address": btc_address, "eth_address": eth_address,
    "mac_address": mac_address, "stripe_key": stripe_key, "google_api_key": google_api_key,
    "gcp_service_account": gcp_service_account, "azure_storage_key": azure_storage_key,
    "anthropic_key": anthropic_key, "huggingface_token": huggingface_token, "npm_token": npm_token,
    "pypi_token": pypi_token, "twilio_key": twilio_key, "sendgrid_key": sendgrid_key,
    "database_url": database_url, "password_assignment": password_assignment,
}
