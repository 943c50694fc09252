"""Text repair on plain strings: normalisation that keeps code's indentation, and mojibake repair.

Pure ``str -> str`` functions, apart from the cleaning step's documents, filters and their order
(`lmforge.data.cleaning`, which applies them as mapping steps): they are what a reader of the
cleaning rules can skip, and what a test exercises on literal strings.

- `normalize_text`: BOM, line endings, Unicode NFC, stray control characters and trailing
  whitespace; never indentation (leading spaces and tabs are kept exactly);
- `fix_mojibake`: UTF-8 read as cp1252/latin-1 ("cafÃ©" -> "café"), with `ftfy.fix_encoding` when
  ftfy is installed and a built-in repair of the common case otherwise;
- `count_mojibake_markers`: what is still garbled after repair (the "mojibake" filter's measure).
"""

from __future__ import annotations

import re
import unicodedata

# Every C0/C1 control character except \t (0x09) and \n (0x0a); \r is gone by then.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# Mojibake: a UTF-8 lead byte (0xC2-0xF4) read as cp1252/latin-1, followed by continuation bytes
# (0x80-0xBF) read the same way. Each candidate is repaired only if its bytes decode as UTF-8.
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))
_CONTINUATION_CHARS = "".join(sorted(
    {bytes([b]).decode("latin-1") for b in _CONTINUATION_BYTES}
    | {bytes([b]).decode("cp1252", errors="ignore") for b in _CONTINUATION_BYTES} - {""}
))
_MOJIBAKE_CANDIDATE = re.compile(f"[\u00c2-\u00f4][{re.escape(_CONTINUATION_CHARS)}]{{1,3}}")
# What is left after repair and almost never occurs in real text: the lead of a 2-byte sequence
# (Â Ã Ð Ñ) or of a general-punctuation sequence (â€ â„) followed by what a continuation byte reads as.
_MOJIBAKE_MARKER = re.compile(f"[\u00c2\u00c3\u00d0\u00d1][{re.escape(_CONTINUATION_CHARS)}]|\u00e2[\u20ac\u201e]")


def normalize_text(text: str) -> str:
    """Normalise code text without touching indentation.

    Strips a leading BOM, turns CRLF/CR into LF, applies Unicode NFC, removes control
    characters other than tab and newline, strips trailing whitespace on each line and
    ends the text with exactly one newline (an all-blank text becomes "").
    """
    text = text.removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = _CONTROL_CHARS.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")
    return text + "\n" if text else ""


def _mojibake_bytes(sequence: str) -> bytes | None:
    """Return the bytes a mojibake sequence was decoded from (cp1252, else latin-1 per char)."""
    out = bytearray()
    for ch in sequence:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            if ord(ch) > 0xFF:
                return None
            out.append(ord(ch))
    return bytes(out)


def _repair_candidate(match: re.Match[str]) -> str:
    """Return the UTF-8 decoding of a candidate's bytes, or the candidate unchanged if invalid."""
    raw = _mojibake_bytes(match.group())
    if raw is None:
        return match.group()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def fix_mojibake(text: str, max_passes: int = 3) -> str:
    """Return text with UTF-8-read-as-cp1252/latin-1 repaired (ftfy.fix_encoding when installed).

    Only text holding at least one mojibake marker is touched: code and tests legitimately hold
    sequences like "ä²" that a blind repair would corrupt. Without ftfy, each candidate sequence
    whose bytes are valid UTF-8 is decoded; a few passes undo double encoding. Text that is not
    repaired is returned as is (no copy).
    """
    if not _MOJIBAKE_MARKER.search(text):
        return text
    try:
        import ftfy
    except ImportError:
        for _ in range(max_passes):
            fixed = _MOJIBAKE_CANDIDATE.sub(_repair_candidate, text)
            if fixed == text:
                break
            text = fixed
        return text
    return ftfy.fix_encoding(text)


def count_mojibake_markers(text: str) -> int:
    """Return how many sequences of text look like mojibake ("Ã©", "â€", "Ð¿"...)."""
    return len(_MOJIBAKE_MARKER.findall(text))
