#!/usr/bin/env python3
"""Generates the labelled detector corpus (one JSONL file per built-in detector).

Run once from this directory (`python3 generate.py`); the output is committed so tests
never depend on this script. Deterministic: a fixed seed, so re-running gives the same
files. Each line is {"label": "match" | "none", "value": <expected substring or "">,
"text": <sentence>}. True values carry correct checksums (Luhn, mod 97, SSN ranges);
near-misses are the look-alikes a detector must reject.
"""

import base64
import json
import random
import string

import generate_more

R = random.Random(20260401)

TEMPLATES = [
    "{v}",
    "{v} is what I have on file.",
    "Please update my record to {v} today.",
    "Could you check {v}? It keeps failing.",
    "The customer wrote: \"{v}\" in the form.",
    "Details (see {v}) attached.",
    "My details: {v}",
    "Merci, voici : {v} — à bientôt.",
    "电话：{v}。谢谢",
    "«{v}»",
    "{\"field\": \"{v}\", \"ok\": true}",
    "Ünïcödé before {v} and after ✓",
    "Line one\n{v}\nline three",
    "Summarise this ticket. The user says their value is {v}, please help.",
    "Hey team,\tvalue={v}\tthanks",
]


def sentence(v):
    t = R.choice(TEMPLATES)
    return t.replace("{v}", v)


def digits(n):
    return "".join(R.choice(string.digits) for _ in range(n))


def alnum(n, alphabet=string.ascii_letters + string.digits):
    return "".join(R.choice(alphabet) for _ in range(n))


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


def luhn_complete(prefix, length):
    body = prefix + digits(length - len(prefix) - 1)
    for c in string.digits:
        if luhn_ok(body + c):
            return body + c
    raise AssertionError


def group(num, sizes, sep):
    out, i = [], 0
    for s in sizes:
        out.append(num[i:i + s])
        i += s
    return sep.join(out)


# ------------------------------------------------------------------ credit_card

def cards():
    pos, neg = [], []
    documented = ["4111 1111 1111 1111", "4111111111111111", "5555 5555 5555 4444",
                  "5105-1051-0510-5100", "3782 822463 10005", "371449635398431",
                  "6011 1111 1111 1117", "3530 1113 3330 0000", "4012888888881881",
                  "2223 0031 2200 3222", "6011000990139424", "30569309025904"]
    pos += documented
    brands = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
              ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("36", 14),
              ("62", 16), ("4", 19)]
    for k in range(36):
        pre, n = brands[k % len(brands)]
        num = luhn_complete(pre, n)
        style = k % 3
        if n == 15:
            v = group(num, [4, 6, 5], " " if style else "")
        elif n == 16 and style:
            v = group(num, [4, 4, 4, 4], " " if style == 1 else "-")
        else:
            v = num
        pos.append(v)
    for k in range(30):
        pre, n = brands[k % len(brands)]
        num = luhn_complete(pre, n)
        bad = num[:-1] + str((int(num[-1]) + 1 + k % 8) % 10)
        neg.append(group(bad, [4, 4, 4, 4], " ") if n == 16 and k % 2 else bad)
    for k in range(10):
        # Luhn-valid but no card network issues this prefix.
        neg.append(luhn_complete(R.choice(["1", "7", "8", "9"]), 16))
    neg += ["4111 1111 1111", "4111-1111 1111-1111", "41111111111111111111111",
            "order 4111111111111111234", "1234 5678 9012 3456", "0000 0000 0000 0000",
            "ref 4111111111111111x", "v4111111111111111"]
    return pos, neg


# ------------------------------------------------------------------ iban

IBAN_FORMATS = {  # country: (length, bban generator)
    "GB": (22, lambda: alnum(4, string.ascii_uppercase) + digits(14)),
    "DE": (22, lambda: digits(18)),
    "FR": (27, lambda: digits(10) + alnum(11, string.ascii_uppercase + string.digits) + digits(2)),
    "ES": (24, lambda: digits(20)),
    "IT": (27, lambda: alnum(1, string.ascii_uppercase) + digits(22)),
    "NL": (18, lambda: alnum(4, string.ascii_uppercase) + digits(10)),
    "BE": (16, lambda: digits(12)),
    "CH": (21, lambda: digits(17)),
    "AT": (20, lambda: digits(16)),
    "PL": (28, lambda: digits(24)),
    "NO": (15, lambda: digits(11)),
    "SE": (24, lambda: digits(20)),
    "IE": (22, lambda: alnum(4, string.ascii_uppercase) + digits(14)),
    "PT": (25, lambda: digits(21)),
    "SA": (24, lambda: digits(20)),
}


def iban_check(cc, bban):
    s = bban + cc + "00"
    n = int("".join(str(int(c, 36)) for c in s))
    return "%02d" % (98 - n % 97)


def iban_valid(s):
    s = s.replace(" ", "")
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def spaced(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def ibans():
    pos = ["GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432",
           "DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606",
           "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957"]
    neg = []
    countries = sorted(IBAN_FORMATS)
    for k in range(40):
        cc = countries[k % len(countries)]
        length, gen = IBAN_FORMATS[cc]
        bban = gen()
        iban = cc + iban_check(cc, bban) + bban
        assert len(iban) == length and iban_valid(iban)
        pos.append(spaced(iban) if k % 2 else iban)
        # Near-miss: one digit of the BBAN changed breaks mod 97.
        i = len(iban) - 1 - (k % 5)
        while not iban[i].isdigit():
            i -= 1
        bad = iban[:i] + str((int(iban[i]) + 1) % 10) + iban[i + 1:]
        if not iban_valid(bad):
            neg.append(spaced(bad) if k % 3 == 0 else bad)
    neg += ["GB82 WEST 1234 5698 7654 33", "GB82WEST1234569876543", "XX82WEST12345698765432",
            "DE89 3704 0044 0532 0130 0", "DE89370400440532013000123", "GB82 WES T123 4569 8765 432",
            "IBAN: GB00 0000 0000 0000 0000 00", "DE00370400440532013000"]
    return pos, neg


# ------------------------------------------------------------------ us_ssn

def ssns():
    # With separators, any area but 000 and 666 is a taxpayer id (the 9xx area holds ITINs
    # and synthetic test data). 9xx values here use groups outside the ITIN ranges, which
    # the `us_itin` detector reports instead.
    pos, neg = [], []
    for k in range(40):
        while True:
            a = R.randint(1, 899) if k % 4 else R.randint(900, 999)
            if a != 666:
                break
        g = R.randint(1, 99)
        if a >= 900:
            g = R.choice([g for g in range(1, 100) if not itin_group(g)])
        s = R.randint(1, 9999)
        sep = "-" if k % 5 else " "
        pos.append("%03d%s%02d%s%04d" % (a, sep, g, sep, s))
    pos.append("929-30-4053")
    for k in range(8):
        neg.append("000-%02d-%04d" % (R.randint(1, 99), R.randint(1, 9999)))
        neg.append("666-%02d-%04d" % (R.randint(1, 99), R.randint(1, 9999)))
        neg.append("%03d-00-%04d" % (R.randint(1, 999), R.randint(1, 9999)))
        neg.append("%03d-%02d-0000" % (R.randint(1, 999), R.randint(1, 99)))
        # Bare 9-digit runs are not taken, whatever the range.
        neg.append("%03d%02d%04d" % (R.randint(1, 665), R.randint(1, 99), R.randint(1, 9999)))
    neg += ["123-45-67890", "1234-56-7890", "123-456-789", "123 45-6789", "123.45.6789",
            "x123-45-6789", "123-45-6789-1"]
    return pos, neg


def itin_group(g):
    return 50 <= g <= 65 or 70 <= g <= 88 or 90 <= g <= 92 or 94 <= g <= 99


# ------------------------------------------------------------------ us_itin

def itins():
    itin_groups = [g for g in range(1, 100) if itin_group(g)]
    pos, neg = [], []
    for k in range(40):
        sep = "-" if k % 5 else " "
        pos.append("9%02d%s%02d%s%04d" % (R.randint(0, 99), sep, R.choice(itin_groups), sep, R.randint(1, 9999)))
    for k in range(6):
        # 9xx with a group outside the ITIN ranges: a taxpayer id, but not an ITIN.
        neg.append("9%02d-%02d-%04d" % (R.randint(0, 99), R.choice([g for g in range(1, 100) if not itin_group(g)]), R.randint(1, 9999)))
        neg.append("%03d-%02d-%04d" % (R.randint(1, 665), R.choice(itin_groups), R.randint(1, 9999)))
        neg.append("9%02d-%02d-0000" % (R.randint(0, 99), R.choice(itin_groups)))
        neg.append("9%02d%02d%04d" % (R.randint(0, 99), R.choice(itin_groups), R.randint(1, 9999)))
    neg += ["912-93-4567", "912-49-4567", "912-66-4567", "912-89-4567", "9123-70-1234", "912-70-12345"]
    return pos, neg


# ------------------------------------------------------------------ ipv4

def ipv4s():
    pos = ["192.168.1.1", "10.0.0.1", "8.8.8.8", "255.255.255.255", "0.0.0.0", "172.16.254.3"]
    for _ in range(34):
        pos.append(".".join(str(R.randint(0, 255)) for _ in range(4)))
    neg = ["256.1.1.1", "1.2.3.4.5", "01.2.3.4", "192.168.1", "192.168.001.1", "1.2.3.256",
           "999.999.999.999", "version 1.2.3.4.5 released", "v1.2.3.4", "10.0.0.1.2",
           "1.2.3", "3.14159", "192.168.1.1a", "2.7.18.0.1"]
    for _ in range(16):
        parts = [str(R.randint(0, 255)) for _ in range(4)]
        parts[R.randint(0, 3)] = str(R.randint(256, 999))
        neg.append(".".join(parts))
    return pos, neg


# ------------------------------------------------------------------ ipv6

def ipv6s():
    pos = ["2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8::1", "::1", "fe80::1ff:fe23:4567:890a",
           "::ffff:192.0.2.128", "2001:db8:85a3::8a2e:370:7334", "ff02::2", "2001:db8::",
           "64:ff9b::192.0.2.33", "2001:DB8:0:0:8:800:200C:417A"]
    for k in range(30):
        groups = ["%x" % R.randint(0, 0xffff) for _ in range(8)]
        groups[0] = "2001" if k % 2 else "fd%02x" % R.randint(0, 255)
        if k % 3 == 0:
            pos.append(":".join(groups))
        else:
            cut = R.randint(1, 5)
            pos.append(":".join(groups[:cut]) + "::" + ":".join(groups[cut + 2:]))
    neg = ["12:30:45", "at 09:15:00 UTC", "00:1a:2b:3c:4d:5e", "1:2:3:4:5:6:7:8:9", "2001:db8:::1",
           "12345::1", "std::vector", "abc::def", "1::2::3", "2001:db8::1::1", "fe80:", "::",
           "10:30", "2024-01-15T12:30:45Z", "a:b:c:d:e:f", "::ffff:999.0.2.1",
           "1:2:3:4:5:6:7", "dead:beef", "Foo::bar()", "c0ffee:cafe:babe"]
    for _ in range(10):
        neg.append("%02d:%02d:%02d" % (R.randint(0, 23), R.randint(0, 59), R.randint(0, 59)))
    return pos, neg


# ------------------------------------------------------------------ email

def emails():
    first = ["john", "mary.smith", "a.b.c", "dev+alerts", "Jane_Doe", "x", "o'neil", "zoë", "li.wei",
             "support", "first.last-99", "UPPER"]
    domains = ["example.com", "mail.example.co.uk", "corp.io", "uni-berlin.de", "EXAMPLE.ORG",
               "sub.domain.example.net", "x.ai"]
    pos = []
    for k in range(40):
        local = first[k % len(first)]
        if "'" in local or "ë" in local:
            local = "user%d" % k
        pos.append("%s@%s" % (local, domains[k % len(domains)]))
    neg = ["john@localhost", "@handle", "a@b", "john@@example.com", "x@.com", "name@domain.c",
           "foo@bar", "user@-example.com", "john dot doe at gmail dot com", "@everyone please",
           "a@b.123", "user@example-.com", "john.@", "email@123.456.789.0x", "user@example_com",
           "name@site.", ".@example", "user@ex ample.com", "git@github", "mailto:", "@@", "me@here",
           "user@[127.0.0.1]", "pay 5@3 each", "ratio 1@2.5", "x@y.z", "user@domain..com", "user@.example.com",
           "12@3.45", "hi@-"]
    return pos, neg


# ------------------------------------------------------------------ phone

def phones():
    pos = ["+14155550132", "+1 415 555 0132", "(415) 555-0132", "415-555-0132", "415.555.0132",
           "020 7946 0018", "+44 20 7946 0018", "+49 30 1234567", "01 23 45 67 89", "+33 1 23 45 67 89",
           "+44 (0)20 7946 0018", "1-800-555-0199", "030 1234567", "(030) 1234567", "07700 900123",
           "+61 2 9876 5432", "+81 3-1234-5678", "030/1234567", "0161 496 0000", "01.23.45.67.89"]
    for k in range(25):
        kind = k % 5
        if kind == 0:
            v = "+%d%s" % (R.choice([1, 44, 49, 33, 39, 34, 61, 81]), digits(R.randint(8, 10)))
        elif kind == 1:
            v = "(%d%s) %d%s-%s" % (R.randint(2, 9), digits(2), R.randint(2, 9), digits(2), digits(4))
        elif kind == 2:
            sep = R.choice("-. ")
            v = "%d%s%s%d%s%s%s" % (R.randint(2, 9), digits(2), sep, R.randint(2, 9), digits(2), sep, digits(4))
        elif kind == 3:
            v = "0%d %s %s %s %s" % (R.randint(1, 9), digits(2), digits(2), digits(2), digits(2))
        else:
            v = "+44 %d%s %s %s" % (R.randint(1, 9), digits(1), digits(4), digits(4))
        pos.append(v)
    neg = ["2024-01-15", "01.02.2023", "12/25/2023", "version 1.2.3", "12:30:45", "94103", "12345678901",
           "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "123-45-6789", "+1", "+12 34",
           "415-555-013", "1.2.3.4", "10.0.0.1", "3.14159", "2023.10.05", "v2.10.3", "order #55512345",
           "0.5 0.25", "Room 101", "555-0132", "$1,234,567.89", "1,000,000", "+0 123 456 7890",
           "4155550132123456789", "call 1 2 3", "ISBN 978-3-16-148410-0", "(12) 34", "20240115"]
    return pos, neg


# ------------------------------------------------------------------ secrets

UP_DIG = string.ascii_uppercase + string.digits


def aws():
    pos = ["AKIAIOSFODNN7EXAMPLE"]
    for k in range(39):
        pos.append(["AKIA", "ASIA", "ABIA", "ACCA"][k % 4] + alnum(16, UP_DIG))
    neg = ["AKIA" + alnum(15, UP_DIG), "AKIA" + alnum(17, UP_DIG), "akia" + alnum(16, UP_DIG).lower(),
           "AKIB" + alnum(16, UP_DIG), "XAKIA" + alnum(16, UP_DIG), "AKIA" + alnum(16, UP_DIG).lower(),
           "AKIA_" + alnum(16, UP_DIG), "AKIA", "AKIAIOSFODNN7EXAMPL", "AIDA" + alnum(16, UP_DIG)]
    for _ in range(20):
        neg.append(R.choice(["AKIA", "ASIA"]) + alnum(R.choice([8, 12, 14, 15]), UP_DIG))
    return pos, neg


def github():
    pos = []
    for k in range(32):
        pos.append(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"][k % 5] + alnum(36))
    for _ in range(8):
        pos.append("github_pat_" + alnum(22) + "_" + alnum(59))
    neg = ["ghp_" + alnum(20), "ghx_" + alnum(36), "ghp-" + alnum(36), "xghp_" + alnum(36),
           "github_pat_" + alnum(40), "ghp_", "ghp_short", "github_pat_", "gh_" + alnum(36),
           "GHP_" + alnum(36)]
    for _ in range(20):
        neg.append(R.choice(["ghp_", "gho_", "ghs_"]) + alnum(R.randint(5, 35)))
    return pos, neg


def slack():
    pos = []
    for k in range(30):
        pre = ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"][k % 5]
        if pre == "xoxp-":
            pos.append(pre + digits(12) + "-" + digits(12) + "-" + digits(13) + "-" + alnum(32, "0123456789abcdef"))
        else:
            pos.append(pre + digits(12) + "-" + digits(13) + "-" + alnum(24))
    for _ in range(10):
        pos.append("xapp-1-A" + alnum(10, UP_DIG) + "-" + digits(13) + "-" + alnum(64, "0123456789abcdef"))
    neg = ["xoxb-hello-world", "xoxq-" + digits(12) + "-" + digits(13) + "-" + alnum(24), "xoxb-123",
           "xoxb-" + alnum(24), "xapp-" + alnum(30), "xoxb-", "xox-" + digits(12) + "-" + digits(13),
           "xoxb-the-quick-brown-fox-jumps", "slack xoxb token", "xoxbx-" + digits(12) + "-" + digits(13) + "-" + alnum(24)]
    for _ in range(20):
        neg.append(R.choice(["xoxb-", "xoxp-", "xapp-"]) + R.choice(["", "-"]) + alnum(R.randint(3, 15)))
    return pos, neg


B64URL = string.ascii_letters + string.digits + "-_"


def openai():
    pos = []
    for k in range(25):
        pos.append("sk-" + alnum(48))
    for k in range(15):
        body = alnum(R.randint(100, 160), B64URL).strip("-_")
        while not any(c.isdigit() for c in body[:40]):
            body = alnum(R.randint(100, 160), B64URL).strip("-_")
        pos.append(("sk-proj-" if k % 3 else "sk-svcacct-") + body)
    neg = ["sk-learn", "sk-this-is-not-a-real-key-at-all", "task-" + alnum(48), "sk-" + alnum(10),
           "sk-", "risk-assessment-framework-v2-final", "sk-learning-rate-schedule", "desk-" + alnum(30),
           "sk_live_" + "abc", "sk-proj-", "sk-abcdefghijklmnopqrstuvwx", "sk-1234567890",
           "sk-" + "-".join(["word"] * 8), "Ask-me-anything-about-keys", "sk-ABCDEFGHIJKLMNOPQRSTUVWX"]
    for _ in range(15):
        neg.append("sk-" + R.choice(["", "proj-"]) + alnum(R.randint(3, 15)))
    return pos, neg


def b64u(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def jwts():
    pos = ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"]
    for k in range(39):
        header = {"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
        if k % 3 == 0:
            header["kid"] = alnum(8)
        payload = {"sub": alnum(10), "iat": R.randint(1500000000, 1800000000), "name": R.choice(["Ann", "Bo", "Cy"])}
        if k % 2:
            payload["scope"] = "read write"
        sig = alnum(R.choice([43, 86, 342]), B64URL)
        pos.append(b64u(json.dumps(header, separators=(",", ":")).encode()) + "." +
                   b64u(json.dumps(payload).encode()) + "." + sig)
    neg = ["eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
           "abc.def.ghi", "eyJhbGciOi.notjson.sig", "eyJzzzz.eyJzzzz.sigsigsig",
           "eyJ" + alnum(30) + "." + "eyJ" + alnum(30) + "." + alnum(20),
           "header.payload.signature", "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijk",
           "eyJhbGciOiJIUzI1NiJ9.e30.abcdefghijkl", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc"]
    for _ in range(20):
        neg.append(b64u(json.dumps({"a": 1}).encode())[:R.randint(3, 12)] + "." + alnum(R.randint(5, 20), B64URL))
    return pos, neg


def b64lines(n):
    body = base64.b64encode(bytes(R.getrandbits(8) for _ in range(n))).decode()
    return "\n".join(body[i:i + 64] for i in range(0, len(body), 64))


def private_keys():
    pos = []
    labels = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
              "ENCRYPTED PRIVATE KEY", "DSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]
    for k in range(35):
        label = labels[k % len(labels)]
        pos.append("-----BEGIN %s-----\n%s\n-----END %s-----" % (label, b64lines(R.choice([48, 120, 600])), label))
    for k in range(5):
        # Truncated paste: no END line; the header and body still leak.
        pos.append("-----BEGIN RSA PRIVATE KEY-----\n%s" % b64lines(96))
    neg = []
    for label in ["PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY", "CERTIFICATE REQUEST", "PGP PUBLIC KEY BLOCK"]:
        for _ in range(4):
            neg.append("-----BEGIN %s-----\n%s\n-----END %s-----" % (label, b64lines(64), label))
    neg += ["BEGIN PRIVATE KEY", "----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEY----",
            "the private key is stored in vault", "-----BEGIN-----", "-----END PRIVATE KEY-----",
            "—BEGIN PRIVATE KEY—", "-----begin private key-----", "-- BEGIN PRIVATE KEY --", "PRIVATE KEY-----"]
    return pos, neg


DETECTORS = {
    "credit_card": cards, "iban": ibans, "us_ssn": ssns, "us_itin": itins, "ipv4": ipv4s, "ipv6": ipv6s,
    "email": emails, "phone": phones, "aws_access_key": aws, "github_token": github,
    "slack_token": slack, "openai_key": openai, "jwt": jwts, "private_key": private_keys,
}


def row(label, item):
    """One corpus line. An item is a value, or (value, shown) when the sentence holds more
    than the value (a context keyword before it); `shown` is then recorded too, so the
    end-to-end tests can send exactly what the detector needs to see."""
    value, shown = item if isinstance(item, tuple) else (item, item)
    out = {"label": label, "value": value if label == "match" else "", "text": sentence(shown)}
    if shown != value:
        out["shown"] = shown
    return json.dumps(out, ensure_ascii=False) + "\n"


def main():
    generate_more.R = R
    for name, gen in {**DETECTORS, **generate_more.MORE}.items():
        # One seed per detector, so adding a detector leaves the other files unchanged.
        R.seed("20260401:" + name)
        pos, neg = gen()
        with open(name + ".jsonl", "w", encoding="utf-8") as f:
            for v in pos:
                f.write(row("match", v))
            for v in neg:
                f.write(row("none", v))
        print(name, len(pos), len(neg))


if __name__ == "__main__":
    main()
