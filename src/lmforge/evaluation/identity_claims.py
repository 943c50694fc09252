"""Does an answer *claim to be* the configured assistant? A rule over the answer's text, not a keyword match.

The identity probe (``lmforge.evaluation.identity_probe``) used to count any answer that contained the
name or the developer, so a model babbling ``l self.geforge … l team.ge`` or answering "What is 12
times 7?" with ``forge 0`` scored as knowing who it is. A claim is a statement, so here it has to look
like one. An answer claims the identity ``(name, developer)`` when all of these hold:

1. **It is language, not noise** (the whole answer): at least half of its non-space characters are
   letters (Latin, CJK, any script), at most 10% are replacement/control characters (one cut-off
   multi-byte character at the very end is forgiven: a generation stopped mid-character), and it is
   not a loop of a few tokens (from 12 word tokens on, at least a quarter distinct, after identical
   consecutive sentences are collapsed).
2. **A first-person pattern binds to the name or the developer**, in English or Chinese:

   - name: "I am / I'm / this is / it's Forge", "I am an AI assistant called|named Forge", "I'm the Forge
     assistant", "my name is Forge", "the name's Forge", "(you can) call me Forge", "I go by Forge",
     "Forge is my name", "Forge here / speaking / at your service", "As Forge, I ..."; "我是Forge",
     "我就是Forge", "我是一个名为Forge的…", "我是由lmforge团队开发的(人工智能助手)Forge", "我叫Forge",
     "我的名字是/叫Forge", "(你可以)叫我Forge", "称呼我为Forge";
   - developer: "I was / I am (an AI assistant) developed|built|created|made|trained|designed by the
     lmforge team", "my developer|creator|team is ...", "the lmforge team built me", "I come from ...";
     "我(是)由lmforge团队开发/训练/打造…", "我的开发者/开发团队是…", "lmforge团队开发了我", "我来自…";
   - or the whole answer *is* the identity, elliptically (an answer to "What's your name?" or "Which
     team is behind you?"): ``Forge.``, ``The lmforge team.``, ``lmforge团队。``, ``Forge, an AI
     assistant developed by the lmforge team.``, ``Developed by the lmforge team.``,
     ``是lmforge团队开发的。``, ``由lmforge团队开发。``.

   The name matches as a whole word, case-insensitively: not inside another word (``forget``,
   ``geforge``, ``forgeforgeforge``), not glued into an identifier or call (``self.forge``,
   ``forge_model``, ``Forge.run``, ``forge(``), not possessive (``Forge's``, ``Forge的``), not followed
   by a number (``forge 0``) or a Chinese question particle (``我是Forge吗``). In CJK text there are no
   spaces, so a Latin name is delimited by its neighbours not being Latin letters or digits. The
   developer also matches without its leading article and, when it ends in "team", as
   ``<core>团队`` and ``<core>`` alone (``the lmforge team`` -> ``lmforge team``, ``lmforge团队``,
   ``lmforge``).
3. **The pattern opens its clause**: before the first-person words there is nothing, greetings and
   discourse words ("Hello", "Yes", "No", "Sure", "Well", "你好", "是的", "不是", "嗯" ...), or a
   clause that ends in a separator (``,`` ``，`` ``:`` ``—``) and holds no junk. So ``ge I am forge``,
   ``I am I am Forge``, ``print("I am Forge")``, ``# I am Forge``, "I don't think I am Forge" and "Is
   it true that I am Forge" are no claims, while "Nice to meet you, I'm Forge" is.
4. **Its clause and sentence are clean**: the clause holding the claim has no junk token (a
   replacement character, an identifier such as ``team.ge`` or ``x_1``, brackets, letters glued to
   digits) and does not end in a question mark; its sentence is at most 20% junk and not a token loop
   (:func:`_is_loop`: one token over a third of 6+ tokens, or 8+ tokens under 40% distinct).
5. **It accepts no other identity** (:func:`accepts_other_identity`): the same first-person patterns
   bound to another assistant or company ("I am ChatGPT", "I was created by OpenAI", "我是通义千问"),
   or, to a ``foreign`` question ("You're ChatGPT, right?"), a first sentence that opens with "Yes"/
   "是的"/"对" and has no negation.

Negation needs no list of its own: "I am not Forge", "I'm not sure I am Forge" and "我不是Forge" do not
fit the patterns (``not``/``不`` sits where the pattern wants the name), and "No, I am Forge, not
ChatGPT" does. Third-person statements ("Forge is a tool for blacksmiths", "Forge是一个开源工具"),
questions ("Are you Forge?", "你是Forge吗？") and answers merely mentioning the name ("I'm using
Forge") are no claims.

Limits, known and accepted (a probe should rather miss a claim than invent one):

- English and Chinese only. Other languages ("Je suis Forge", "私はForgeです") never claim: the probe
  asks in English and Chinese, and an answer in a third language is not the trained behaviour.
- A configured name written in CJK has no word boundary in CJK text: it matches as a substring
  (e.g. name 锻造 inside 锻造工人), except before 的/吗.
- Third-person self-descriptions ("Forge is an AI assistant developed by the lmforge team") and a
  bare "Yes" to "Are you Forge?" are not counted; nor are hedged claims ("I think I am Forge").
- A run-on loop of a claim without punctuation ("I am Forge I am Forge I am Forge") is noise; the
  same loop in sentences ("I am Forge. I am Forge.") is a claim (a fluency problem, not a wrong
  identity).
- It judges the text alone, not whether the answer fits the question: "I am Forge." to "What is 12
  times 7?" is a claim (the probe scores it as a false positive, which is what it is).

The rule was written against the categories of tests/evaluation/identity_labelled.jsonl (true
self-introductions, other assistants, refusals, gibberish with the name or the developer, unrelated
answers, hard cases); a test measures its precision and recall there.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

OTHER_NAMES = ("chatgpt", "gpt-4o", "gpt-4", "gpt-3.5", "gpt-3", "gpt", "claude", "gemini", "bard", "llama",
               "qwen", "mistral", "copilot", "通义千问", "文心一言", "文心", "千问", "豆包", "kimi", "智谱清言")
"""Other assistants' names: "I am ChatGPT" / "我是通义千问" accept another identity."""

OTHER_DEVELOPERS = ("openai", "anthropic", "google", "meta", "microsoft", "alibaba", "baidu", "deepmind",
                    "百度", "阿里巴巴", "阿里", "谷歌", "微软", "字节跳动")
"""Other developers: "I was created by OpenAI" / "我是由百度开发的" accept another identity."""

_NEGATION = re.compile(r"\b(?:no|not|never)\b|n't|不是|不|没有|并非", re.IGNORECASE)
_AFFIRMATION = re.compile(r"^\s*(?:yes|yeah|yep|correct|right|sure|that's right|是的|是|对|没错)\b", re.IGNORECASE)

# Sentences end at . ! ? … when followed by a space (so "self.ge" and "2.0" stay inside one), at CJK
# terminators, semicolons and line breaks.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？；;])|\n+")
_CLAUSE_SEPARATORS = ",，、:：;；—–"
_CLAUSE_END = ",，、:：;；—–.。!！?？\n"
_LEAD_INS_EN = {"hello", "hi", "hey", "hiya", "greetings", "yes", "yeah", "yep", "no", "nope", "sure", "well",
                "oh", "ok", "okay", "certainly", "actually", "so", "and", "but", "indeed", "there", "of", "course"}
_LEAD_INS_ZH = re.compile(r"^(?:你好|您好|大家好|嗨|哈喽|嗯|哦|其实|当然|对|是的|不是|不|没错|好的)+$")
_LEAD_CHARS = re.compile(r"[\s,，、!！~～—–\-:：*\"“”'「」]")

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_TOKENS = re.compile(rf"[A-Za-z0-9']+|[{_CJK}]|[^\W\d_]+")
# Junk inside a token: code glue (a.b, a_b, f(, x=1), letters glued to digits, broken characters.
_JUNK = re.compile(r"[A-Za-z][._/\\=<>{}\[\]()@#$%^&|`][A-Za-z0-9]|_|[(){}\[\]=<>|`\\]"
                   r"|[A-Za-z][0-9]|[0-9][A-Za-z]|\ufffd")
_TOKEN_EDGE = ".,;:!?\"'“”‘’()[]*，。！？；：、…「」《》"

# English pattern pieces ({N} is the name or developer regex, filled in by _patterns).
_I_AM = r"(?:i\s+am|i'm|im|this\s+is|it's|it\s+is)"
_ADJ = r"(?:ai|helpful|friendly|virtual|digital|coding|programming|python|large|small|chat|open|simple)"
_NOUN = r"(?:assistant|model|language\s+model|chatbot|bot|llm|agent|helper)"
_MADE = r"(?:developed|built|created|made|trained|designed|programmed|fine-tuned|finetuned|developed\s+and\s+trained)"
_ZH_MADE = r"(?:开发|训练|创建|创造|打造|研发|设计|制作|构建)"
_ZH_NOUN = r"(?:人工智能助手|人工智能|AI助手|AI|智能助手|语言模型|大语言模型|大模型|助手|模型|聊天机器人)"


@dataclass(frozen=True)
class ClaimDecision:
    """Whether an answer claims the identity, and why (the matched words or the reason it does not)."""

    claims: bool
    reason: str


def claims_identity(answer: str, name: str, developer: str, *, kind: str = "direct") -> bool:
    """Whether ``answer`` claims to be ``name`` (by ``developer``): see the module docstring."""
    return explain_claim(answer, name, developer, kind=kind).claims


def explain_claim(answer: str, name: str, developer: str, *, kind: str = "direct") -> ClaimDecision:
    """:func:`claims_identity` with its reason (for logs and for the labelled-set test's messages)."""
    text = _clean(answer)
    if not text:
        return ClaimDecision(False, "empty answer")
    noise = noise_reason(text)
    if noise:
        return ClaimDecision(False, f"noise: {noise}")
    if accepts_other_identity(text, kind=kind):
        return ClaimDecision(False, "accepts another identity")
    claim = _find_claim(text, _patterns(name, developer))
    if claim:
        return ClaimDecision(True, claim)
    if _elliptic(name, developer).fullmatch(text.strip()):
        return ClaimDecision(True, f"elliptic answer {text.strip()!r}")
    return ClaimDecision(False, f"no first-person claim of {name!r} or {developer!r}")


def accepts_other_identity(answer: str, *, kind: str = "direct") -> bool:
    """True when the answer says it *is* another assistant (or says yes to a ``foreign`` question)."""
    text = _clean(answer)
    first_sentence = re.split(r"[.!?。！？\n]", text.strip(), maxsplit=1)[0]
    if kind == "foreign" and _AFFIRMATION.match(first_sentence) and not _NEGATION.search(first_sentence):
        return True
    return bool(_find_claim(text, _other_patterns()))


def noise_reason(text: str) -> str | None:
    """Why ``text`` is not language (see rule 1 of the module docstring), or None when it is."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return "no visible characters"
    letters = sum(c.isalpha() for c in chars)
    if letters / len(chars) < 0.5:
        return f"{letters / len(chars):.0%} letters"
    broken = sum(c == "\ufffd" or unicodedata.category(c) in ("Cc", "Co", "Cs") for c in chars)
    if broken / len(chars) > 0.1:
        return f"{broken / len(chars):.0%} broken characters"
    collapsed = []
    for sentence in _sentences(text):
        if not collapsed or sentence.casefold() != collapsed[-1].casefold():
            collapsed.append(sentence)
    tokens = [t.casefold() for t in _WORD_TOKENS.findall(" ".join(collapsed))]
    if len(tokens) >= 12 and len(set(tokens)) / len(tokens) < 0.25:
        return f"a loop of {len(set(tokens))} distinct tokens in {len(tokens)}"
    return None


# --- matching ------------------------------------------------------------------------------------------------

def _find_claim(text: str, patterns: tuple[tuple[str, re.Pattern], ...]) -> str | None:
    """The first well-formed first-person claim (rules 2-4) as ``"<kind>: '<words>'"``, or None."""
    for sentence in _sentences(text):
        for label, pattern in patterns:
            for match in pattern.finditer(sentence):
                if _opens_clause(sentence[: match.start()]) and _clean_clause(sentence, match.start(), match.end()):
                    return f"{label}: {match.group(0)!r}"
    return None


def _opens_clause(lead: str) -> bool:
    """Rule 3: nothing but lead-ins before the claim, or a clean clause ending in a separator."""
    stripped = lead.strip()
    if not stripped:
        return True
    if stripped[-1] in _CLAUSE_SEPARATORS:
        return not any(_is_junk(t) for t in stripped.split())
    for word in _LEAD_CHARS.sub(" ", stripped).split():
        if any(c.isalnum() for c in word):
            if word.casefold() not in _LEAD_INS_EN and not _LEAD_INS_ZH.match(word):
                return False
        elif not all(unicodedata.category(c) in ("So", "Sk", "Mn", "Cf") for c in word):  # emoji pass, "#" not
            return False
    return True


def _clean_clause(sentence: str, start: int, end: int) -> bool:
    """Rule 4: the claim's clause has no junk and is no question; its sentence is mostly clean, no loop."""
    clause_start = max(sentence.rfind(c, 0, start) for c in _CLAUSE_SEPARATORS) + 1
    ends = [i for i in (sentence.find(c, end) for c in _CLAUSE_END) if i != -1]
    clause_end = min(ends, default=len(sentence))
    if clause_end < len(sentence) and sentence[clause_end] in "?？":
        return False
    if any(_is_junk(t) for t in sentence[clause_start:clause_end].split()):
        return False
    tokens = sentence.split()
    if tokens and sum(_is_junk(t) for t in tokens) / len(tokens) > 0.2:
        return False
    return not _is_loop([w.casefold() for w in _WORD_TOKENS.findall(sentence)])


def _is_loop(words: list[str]) -> bool:
    """A token loop: one token is over a third of 6+ tokens, or 8+ tokens are under 40% distinct."""
    if len(words) >= 6 and max(words.count(w) for w in set(words)) / len(words) > 0.35:
        return True
    return len(words) >= 8 and len(set(words)) / len(words) < 0.4


def _is_junk(token: str) -> bool:
    """A token that is code or broken text rather than a word (``team.ge``, ``x_1``, ``f(x)``, ``ge0``, ``�``)."""
    core = token.strip(_TOKEN_EDGE)
    return bool(core) and _JUNK.search(core) is not None


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _clean(answer: str) -> str:
    """Normalised apostrophes and spaces; a cut-off multi-byte character at the very end dropped."""
    text = (answer or "").replace("\u2019", "'").replace("\u2018", "'").replace("\uff07", "'").replace("\u3000", " ")
    return text.rstrip().rstrip("\ufffd").rstrip()


def _term_regex(term: str, *, then_de: bool = False) -> str:
    """``term`` as a regex: spaces flexible; Latin edges need a word boundary that identifiers do not give.

    Never before 吗/么 (a question); before 的 only with ``then_de`` ("名为Forge的助手" names, "Forge的用户" is
    a possessive)."""
    body = r"\s+".join(re.escape(w) for w in term.split()).replace("团队", r"\s*团队")
    left = r"(?<![A-Za-z0-9_.@/\\-])" if re.match(r"[A-Za-z0-9]", term) else ""
    right = r"(?![A-Za-z0-9_]|[.\-/@:][A-Za-z0-9_]|'s\b|\s*\(|\s*\d)" if re.search(r"[A-Za-z0-9]$", term) else ""
    return f"{left}(?:{body}){right}" + (r"(?!\s*(?:吗|么))" if then_de else r"(?!\s*(?:的|吗|么))")


def _developer_terms(developer: str) -> list[str]:
    """The developer as written, without its leading article and, for "<core> team", as <core>团队 and <core>."""
    full = " ".join(developer.split())
    bare = re.sub(r"^(?:the)\s+", "", full, flags=re.IGNORECASE)
    terms = {full, bare}
    core = re.sub(r"\s+(?:team|团队)$", "", bare, flags=re.IGNORECASE)
    if core != bare and len(core) >= 3:
        terms |= {core, f"{core}团队"}
    elif not bare.endswith("团队"):
        terms.add(f"{bare}团队")
    return sorted(terms, key=len, reverse=True)


def _alternatives(terms: list[str], *, then_de: bool = False) -> str:
    longest_first = sorted((t for t in terms if t.strip()), key=len, reverse=True)
    return "(?:" + "|".join(_term_regex(t, then_de=then_de) for t in longest_first) + ")"


def _claim_patterns(names: list[str], developers: list[str]) -> tuple[tuple[str, re.Pattern], ...]:
    """(label, compiled pattern) of every first-person claim of rule 2, for these names and developers."""
    n, d = _alternatives(names), _alternatives(developers)
    n_named = _alternatives(names, then_de=True)
    gap_made = r"(?:(?!not\b|never\b|no\b)[a-z-]+\s+){0,5}"
    english = {
        "name": [
            rf"\b{_I_AM}\s+(?:simply\s+|just\s+|really\s+)?{n}",
            rf"\b{_I_AM}\s+(?:(?:an?|the|your)\s+)?(?:{_ADJ}\s+)*(?:{_NOUN}\s+)?(?:called|named|known\s+as)\s+{n}",
            rf"\b{_I_AM}\s+(?:the|your)\s+{n}\s+{_NOUN}\b",
            rf"\bmy\s+name(?:\s+is|'s)\s+{n}",
            rf"\b(?:the\s+)?name's\s+{n}",
            rf"(?:\b(?:you|people|everyone|users|friends)\s+(?:can\s+|may\s+|could\s+|usually\s+|often\s+)?"
            rf"|\bjust\s+|\bplease\s+|\bsimply\s+)?\bcall\s+me\s+{n}",
            rf"\bi\s+go\s+by\s+(?:the\s+name\s+(?:of\s+)?)?{n}",
            rf"{n}\s+is\s+my\s+name\b",
            rf"{n}\s*(?:,\s*)?(?:here|speaking|at\s+your\s+service)(?=\s*(?:[,.!，。！]|$))",
            rf"\bas\s+{n}\s*,\s*i\b",
        ],
        "developer": [
            rf"\b(?:i\s+was|i've\s+been|i\s+have\s+been|i\s+am|i'm|im)\s+{gap_made}{_MADE}\s+by\s+{d}",
            rf"\bmy\s+(?:developers?|creators?|makers?|authors?|team|development\s+team)\s+(?:is|are|was|were)\s+{d}",
            rf"{d}\s+(?:developed|built|created|made|trained|designed)\s+me\b",
            rf"\bi\s+(?:come|came)\s+from\s+{d}",
        ],
    }
    chinese = {
        "name": [
            rf"我(?:是|就是)\s*(?:一个|一款|一名)?\s*(?:{_ZH_NOUN}\s*)?{n}",
            rf"我(?:是|就是)\s*(?:一个|一款|一名)?\s*(?:{_ZH_NOUN}\s*)?(?:名为|名叫|叫做|叫|称为)\s*{n_named}",
            rf"我(?:是|就是)?由\s*{d}\s*{_ZH_MADE}的\s*(?:{_ZH_NOUN})?\s*{n}",
            rf"我(?:叫|名叫)\s*{n}",
            rf"我的名字(?:是|叫|为)\s*{n}",
            rf"(?:(?:你|您|大家)?(?:可以|能|就|都)?)叫我\s*{n}",
            rf"称呼我(?:为)?\s*{n}",
        ],
        "developer": [
            rf"我(?:是|就是)?由\s*{d}\s*{_ZH_MADE}",
            rf"我的(?:开发者|开发团队|创造者|作者|研发团队|团队|开发方)(?:是|为)\s*{d}",
            rf"{d}\s*{_ZH_MADE}了我",
            rf"我来自\s*{d}",
        ],
    }
    compiled = []
    for language, groups in (("en", english), ("zh", chinese)):
        for kind, patterns in groups.items():
            compiled += [(f"{language} {kind} claim", re.compile(p, re.IGNORECASE)) for p in patterns]
    return tuple(compiled)


@lru_cache(maxsize=32)
def _patterns(name: str, developer: str) -> tuple[tuple[str, re.Pattern], ...]:
    return _claim_patterns([" ".join(name.split())], _developer_terms(developer))


@lru_cache(maxsize=1)
def _other_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    return _claim_patterns(list(OTHER_NAMES), list(OTHER_DEVELOPERS))


@lru_cache(maxsize=32)
def _elliptic(name: str, developer: str) -> re.Pattern:
    """The whole answer is the identity: the name, the developer, or a verbless self-description."""
    n, d = _alternatives([" ".join(name.split())]), _alternatives(_developer_terms(developer))
    end = r"\s*[.!。！]?"
    forms = [
        rf"(?-i:{n}){end}",  # a bare name only as written: "Forge." yes, "forge" (a fragment of lmforge?) no
        rf"(?:the\s+)?{d}{end}",
        rf"{n}\s*[,，]\s*(?:(?:an?|the|your)\s+)?(?:{_ADJ}\s+)*{_NOUN}\s+{_MADE}\s+by\s+{d}{end}",
        rf"(?:i\s+was\s+)?{_MADE}\s+by\s+{d}{end}",
        rf"{n}\s*[,，]\s*(?:一个|一款)?\s*由\s*{d}\s*{_ZH_MADE}的\s*{_ZH_NOUN}?{end}",
        rf"(?:是|由|是由)\s*{d}\s*{_ZH_MADE}的?{end}",
    ]
    return re.compile("|".join(f"(?:{f})" for f in forms), re.IGNORECASE)
