"""Find and redact personal data and secrets in text (emails, IP addresses, credentials).

Follows the BigCode/StarCoder PII pipeline: each match is replaced by a placeholder
(`<EMAIL>`, `<IP_ADDRESS>`, `<SECRET>`) so the text keeps its shape, and the counts per kind are
returned so a cleaning step can record them. Detection is regular expressions plus a validation
step per kind (no model, no network), tuned not to damage code:

- `email`: local@domain.tld with a real-looking TLD. Kept (not PII): addresses at the domains that
  RFC 2606/6761 reserve for documentation (`example.com/.org/.net`, `*.example`, `*.test`,
  `*.invalid`, `*.localhost`, `localhost`). `@decorator` lines and `a @ b` matrix products have no
  local part glued to the `@`, so they never match.
- `ipv4`: four octets 0-255, validated by `ipaddress`. Kept, as BigCode does: private, loopback,
  link-local, unspecified (`0.0.0.0`), multicast and reserved addresses, which identify no one and
  appear in every networking example. Also kept: dotted numbers that read as versions, i.e. every
  octet a single digit (`1.2.3.4`, which also covers public resolvers such as `8.8.8.8`), a
  number that continues with more dots (`1.2.3.4.5`), or one named on its line as a version,
  pin, object identifier or section ("version", "v", "==", "min", "ObjectIdentifier(", "section").
- `ipv6`: hex groups with at least two colons, validated by `ipaddress.IPv6Address`; only global
  unicast addresses (2000::/3) that `ipaddress` calls global count, so slices (`a[::2]`, `x[1::3]`),
  loopback (`::1`), link-local, documentation (`2001:db8::/32`) and reserved ranges are kept.
- `secret`: AWS access key ids, GitHub/GitLab/Slack/Google/Stripe/Hugging Face tokens by their
  documented prefixes, PEM private-key blocks (with a base64 body of >= 64 characters: the bare
  markers that key-handling code holds are kept), and `api_key = "..."`-style assignments (name mentions
  key/secret/token/password) of a long (>= 20 characters), high-entropy (>= 3.5 bits/char) string
  that is not a placeholder, a dotted name, a template or URL (`{ } $ % . : @`), nor words
  (`snake_case`/`CamelCase` names: see `_looks_like_identifier`); only the value is replaced, so
  `api_key = "<SECRET>"` stays valid code. On the 23,000 .py files of this project's site-packages
  these rules leave 3 secret matches (a Hugging Face token, two base64 page tokens); without the
  last two, 26 in the first 6,000 files, mostly names such as "mlflow.trace.tokenUsage".

- `phone`: Chinese and Japanese telephone numbers in the forms people write them. Chinese mobiles
  `1[3-9]x xxxx xxxx` (11 digits, a real operator prefix, optionally `+86`/`0086`/`86-` before it,
  optionally split 3-4-4 by one space or hyphen); Chinese landlines `0AA(A)-NNNNNNN(N)` (area code,
  hyphen, 7-8 digits) or `+86 AA(A) NNNNNNN(N)`; Japanese numbers `0X0-XXXX-XXXX` (mobile/IP phone:
  070, 080, 090, 050), landlines `0A-BBBB-CCCC` (three hyphen- or space-separated groups of 10 digits
  in all, starting with 0; 11 for 0X0 mobiles, so dates such as 08-05-2021 and hex dumps stay) and
  `+81` forms (`+81 90-1234-5678`, `+81-3-1234-5678`). A bare 10-digit number is never a phone;
  a bare 11-digit one is a Chinese mobile only with CJK text or a phone word (tel, phone, 电话...)
  in the 30 characters before it on its line: in Go's sources 2**34 (17179869184) and Unix times
  are such numbers. Digits glued to more digits, letters, `.` or `_` never match. On 68 M
  characters of Go, 65 M of Rust and 11 M of Python sources: no phone or ID matches.
- `id_number`: Chinese resident identity numbers (18 characters: 6-digit region code starting 1-8,
  birth date YYYYMMDD from 1900 to 2099 that exists, 3-digit sequence, check character) whose check
  character is the ISO 7064 MOD 11-2 one (`id_check_character`): a random 18-digit number passes
  the date and the check with a probability of ~1/300, so long numbers in code and tables stay.

Speed (2 shared cores): 10-12 MB/s on the stdlib, 18 MB/s on site-packages (351 MB).

`redact_pii(text)` returns text in which `find_pii` finds nothing (placeholders match no detector).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

PII_KINDS = ("email", "ipv4", "ipv6", "secret", "phone", "id_number")
"""Every kind find_pii counts, in a fixed order."""
PLACEHOLDERS = {"email": "<EMAIL>", "ipv4": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>", "secret": "<SECRET>",
                "phone": "<PHONE>", "id_number": "<ID_NUMBER>"}
"""What redact_pii puts in place of each kind (BigCode's placeholders)."""

RESERVED_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "localhost")
RESERVED_EMAIL_TLDS = ("example", "test", "invalid", "localhost")

# Emails are found from each "@": the domain by a forward match, the local part by a match on the
# reversed text before it (scanning only around "@" keeps this fast on code).
_EMAIL_AT = re.compile(r"@(?=[A-Za-z0-9])")
_EMAIL_DOMAIN = re.compile(r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}([A-Za-z]{2,24}))(?![\w-])")
_EMAIL_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9._%+-]{0,63}[A-Za-z0-9](?![\w.%+-])")
# A common generic TLD or any two-letter country code; rules out `x@obj.weight`-like code.
_COMMON_TLDS = frozenset(
    "com org net edu gov mil int info biz name pro io dev ai app co me tech cloud online site xyz "
    "email mail museum aero coop jobs mobi travel".split()
    + list(RESERVED_EMAIL_TLDS)
)

# The last three octets, found from their literal "." (fast on code, where digits abound); the
# first octet and the character before it are then read backwards in code.
_IPV4_TAIL = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\w)")
# Dotted numbers named as something else: versions, requirement pins, ASN.1 object identifiers, sections.
_NOT_AN_ADDRESS_CONTEXT = re.compile(
    r"(?:\b(?:versions?|ver|v|releases?|minimum|maximum|min|max|oid|objectidentifier|sections?|rfc)[\s:=_\"'(\[]*"
    r"|[=<>~!]=\s*[\"']?)$",
    re.IGNORECASE,
)

# IPv6 candidates are found from a pair of colons with at most 4 hex digits between (a literal ":"
# start keeps the scan fast), then widened to the whole run of hex digits and colons.
_IPV6_SEED = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_OR_COLON = frozenset("0123456789abcdefABCDEF:")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# Tokens with a documented prefix. Each pattern starts with a literal (what lets the regex engine
# skip ahead fast: one pattern per prefix family, ~40 MB/s each on code); the character before a
# match must not be a word character (checked in code).
_TOKEN_SECRETS = (
    r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[0-9A-Z]{16}\b",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36}\b",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{82}\b",  # GitHub fine-grained token
    r"hf_[A-Za-z]{34}\b",  # Hugging Face access token
    r"glpat-[A-Za-z0-9_-]{20}(?![\w-])",  # GitLab personal access token
    r"xox[abposr]-[A-Za-z0-9-]{10,72}\b",  # Slack tokens
    r"AIza[0-9A-Za-z_-]{35}(?![\w-])",  # Google API key
    r"sk_live_[0-9A-Za-z]{24,99}\b",  # Stripe secret key
    r"rk_live_[0-9A-Za-z]{24,99}\b",  # Stripe restricted key
    # a PEM block whose body is a real key: base64, line breaks (maybe escaped) and header lines
    r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----[A-Za-z0-9+/=\s\\:,-]{64,20000}?"
    r"-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----",
)
_TOKEN_SECRET_PATTERNS = tuple(re.compile(pattern) for pattern in _TOKEN_SECRETS)
# A long quoted string without spaces, then (looking back on its line) a credential-like name assigned to it.
_LONG_QUOTED = re.compile(r"([\"'])([^\"'\s<>]{20,200})\1")
_SECRET_NAME_BEFORE = re.compile(
    r"(?i)(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key|private[_-]?key|auth[_-]?key)(?![a-z])[\w-]*"
    r"[\"']?\]?\s*(?::|=|:=|=>)\s*[rbuf]?$"
)
_PLACEHOLDER_VALUE = re.compile(r"(?i)x{4,}|\*{4,}|your|example|dummy|change|placeholder|redacted|test|fake")
MIN_SECRET_ENTROPY = 3.5
"""Bits per character above which an assigned string is a credential rather than a word or path."""


def shannon_entropy(value: str) -> float:
    """Return the Shannon entropy of value in bits per character (0 for an empty string)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _find_emails(text: str) -> list[tuple[int, int, str]]:
    spans = []
    for at in _EMAIL_AT.finditer(text):
        if not at.start():
            continue
        domain_match = _EMAIL_DOMAIN.match(text, at.end())
        local_match = _EMAIL_LOCAL_REVERSED.match(text[at.start() - 1: max(at.start() - 66, 0) or None: -1])
        if not domain_match or not local_match:
            continue
        domain, tld = domain_match.group(1).lower(), domain_match.group(2).lower()
        if tld not in _COMMON_TLDS and len(tld) != 2 or tld in RESERVED_EMAIL_TLDS:
            continue
        if any(domain == d or domain.endswith("." + d) for d in RESERVED_EMAIL_DOMAINS):
            continue
        spans.append((at.start() - local_match.end(), domain_match.end(), "email"))
    return spans


def _find_ipv4(text: str) -> list[tuple[int, int, str]]:
    spans = []
    for tail in _IPV4_TAIL.finditer(text):
        start = tail.start()
        while start > 0 and tail.start() - start < 3 and text[start - 1].isdigit():
            start -= 1
        if start == tail.start() or (start and (text[start - 1].isalnum() or text[start - 1] in "._")):
            continue  # no first octet, or part of a longer dotted name/number
        candidate = text[start:tail.end()]
        if all(len(octet) == 1 for octet in candidate.split(".")):
            continue  # reads as a version ("1.2.3.4")
        try:
            address = ipaddress.IPv4Address(candidate)
        except ValueError:
            continue  # an octet above 255 or a leading zero
        if not address.is_global or address.is_multicast:
            continue
        before = text[max(text.rfind("\n", 0, start) + 1, start - 40): start]
        if not _NOT_AN_ADDRESS_CONTEXT.search(before):
            spans.append((start, tail.end(), "ipv4"))
    return spans


def _find_ipv6(text: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    covered = 0
    for seed in _IPV6_SEED.finditer(text):
        if seed.start() < covered:
            continue
        start, end = seed.start(), seed.end()
        while start > 0 and text[start - 1] in _HEX_OR_COLON:
            start -= 1
        while end < len(text) and text[end] in _HEX_OR_COLON:
            end += 1
        covered = end
        if (start and (text[start - 1].isalnum() or text[start - 1] in "_.")) or (
            end < len(text) and (text[end].isalnum() or text[end] in "_.")
        ):
            continue
        try:
            address = ipaddress.IPv6Address(text[start:end])
        except ValueError:
            continue
        if address in _GLOBAL_UNICAST and address.is_global:
            spans.append((start, end, "ipv6"))
    return spans


_FRAGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_NOT_IN_SECRETS = re.compile(r"[{}$%.:@\\]")


def _looks_like_identifier(value: str) -> bool:
    """True when value reads as words (snake_case, CamelCase, paths): letter fragments of >= 4 on average.

    A random token splits into short fragments ("Zx9kLm2Qp7" -> Zx, k, Lm, Qp); a name into words
    ("PocketTTSAudioTokenizerModel", "cache_creation_input_tokens").
    """
    fragments = _FRAGMENT.findall(value)
    return bool(fragments) and sum(map(len, fragments)) / len(fragments) >= 4


def _is_assigned_secret(value: str) -> bool:
    if _NOT_IN_SECRETS.search(value) or _PLACEHOLDER_VALUE.search(value) or _looks_like_identifier(value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    return classes >= 2 and shannon_entropy(value) >= MIN_SECRET_ENTROPY


# Phones and ID numbers: found from a digit run with separators, then checked in code. A match must
# not touch digits, letters, "." or "_" on either side (versions, hashes, identifiers).
# Every pattern starts with a required character class (no optional prefix, no lookbehind), so the
# regex engine skips ahead to candidate characters: 10x faster on number-heavy prose.
_CN_MOBILE = re.compile(
    r"(?:\+86[\s-]?1|0086[\s-]?1|86-1|1)(?:3\d|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8\d|9[0-35-9])"
    r"(?:\d{8}|[\s-]\d{4}[\s-]\d{4})"
)
_CN_LANDLINE = re.compile(r"(?:\+86[\s-]?(?:\(0?\)|0)?[1-9]\d{1,2}[\s-]|0[1-9]\d{1,2}-)[2-9]\d{6,7}")
_JP_PHONE = re.compile(r"(?:\+81[\s-]?(?:\(0\))?[1-9]\d{0,3}|0[1-9]\d{0,3})([\s-])\d{1,4}\1\d{4}")
_CN_ID = re.compile(r"[1-8]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]")
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_NOT_BESIDE = re.compile(r"[\w.]")


def id_check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a Chinese resident ID's first 17 digits ("0"-"9" or "X")."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def is_cn_resident_id(value: str) -> bool:
    """True for 18 characters with a real birth date and the right MOD 11-2 check character."""
    import datetime

    if not _CN_ID.fullmatch(value):
        return False
    try:
        datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return id_check_character(value[:17]) == value[17].upper()


def _isolated(text: str, start: int, end: int) -> bool:
    """No word character or "." glued to text[start:end] (a "." ending a sentence is fine)."""
    if start and _NOT_BESIDE.match(text[start - 1]) and not text[start - 1] == "+":
        return False
    if end < len(text) and _NOT_BESIDE.match(text[end]):
        return text[end] == "." and (end + 1 == len(text) or not text[end + 1].isalnum())
    return True


# A bare 11-digit mobile needs a reason to be read as one on its line, within 30 characters before it:
# CJK text or a phone word (2**34 = 17179869184 and Unix times are 11-digit numbers in code).
_PHONE_CONTEXT = re.compile(
    r"(?i)(?:tel|phone|mobile|cell|fax|contact|[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff1a])[^\n]{0,30}$"
)


def _is_phone(text: str, match: re.Match, pattern: re.Pattern) -> bool:
    value = match.group()
    if pattern is _JP_PHONE:
        # National numbers are 10 digits (0 + 9), mobiles/IP phones 11 (0X0 + 8): a date
        # (08-05-2021) or a hex dump (0803 0000 0028) has another count.
        digits = "".join(ch for ch in value if ch.isdigit())
        national = "0" + digits[2:].removeprefix("0") if value.startswith("+81") else digits
        return len(national) == 10 or (len(national) == 11 and national[1] in "5789" and national[2] == "0")
    if pattern is _CN_MOBILE and value.isdigit():
        return bool(_PHONE_CONTEXT.search(text, max(0, match.start() - 40), match.start()))
    return True


def _find_phones_and_ids(text: str) -> list[tuple[int, int, str]]:
    spans = []
    for match in _CN_ID.finditer(text):
        if _isolated(text, match.start(), match.end()) and is_cn_resident_id(match.group()):
            spans.append((match.start(), match.end(), "id_number"))
    for pattern in (_CN_MOBILE, _CN_LANDLINE, _JP_PHONE):
        for match in pattern.finditer(text):
            if _isolated(text, match.start(), match.end()) and _is_phone(text, match, pattern):
                spans.append((match.start(), match.end(), "phone"))
    return spans


def find_pii_spans(text: str) -> list[tuple[int, int, str]]:
    """Return the non-overlapping (start, end, kind) spans of PII in text, in text order.

    Secrets are found first and win an overlap (an email inside a key block is part of the key).
    """
    spans: list[tuple[int, int, str]] = []
    for pattern in _TOKEN_SECRET_PATTERNS:
        spans += [(m.start(), m.end(), "secret") for m in pattern.finditer(text)
                  if not m.start() or not (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_")]
    for match in _LONG_QUOTED.finditer(text):
        if _is_assigned_secret(match.group(2)):
            before = text[max(text.rfind("\n", 0, match.start()) + 1, match.start() - 100): match.start()]
            if _SECRET_NAME_BEFORE.search(before):
                spans.append((match.start(2), match.end(2), "secret"))
    if "@" in text:
        spans += _find_emails(text)
    spans += _find_ipv4(text)
    spans += _find_ipv6(text)
    if _ANY_DIGIT_RUN.search(text):
        spans += _find_phones_and_ids(text)
    priority = {kind: i for i, kind in enumerate(("secret", "email", "id_number", "phone", "ipv6", "ipv4"))}
    spans.sort(key=lambda span: (span[0], priority[span[2]], -span[1]))
    chosen: list[tuple[int, int, str]] = []
    for span in spans:
        if chosen and span[0] < chosen[-1][1]:
            continue
        chosen.append(span)
    return chosen


_ANY_DIGIT_RUN = re.compile(r"\d{4}")


def find_pii(text: str) -> dict[str, int]:
    """Return how many of each PII kind text holds: {"email", "ipv4", "ipv6", "secret", "phone", "id_number"}."""
    counts = dict.fromkeys(PII_KINDS, 0)
    for _, _, kind in find_pii_spans(text):
        counts[kind] += 1
    return counts


def redact_pii(text: str, max_passes: int = 3) -> tuple[str, dict[str, int]]:
    """Return (text with each PII match replaced by its placeholder, counts per kind).

    A replacement can, in contrived text, join two fragments into a new match; a few passes make
    sure `find_pii` of the result is all zeros (text is returned unchanged, not copied, when clean).
    """
    counts = dict.fromkeys(PII_KINDS, 0)
    for _ in range(max_passes):
        spans = find_pii_spans(text)
        if not spans:
            break
        parts, last = [], 0
        for start, end, kind in spans:
            parts += [text[last:start], PLACEHOLDERS[kind]]
            counts[kind] += 1
            last = end
        parts.append(text[last:])
        text = "".join(parts)
    return text, counts
