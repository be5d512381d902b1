"""Prompt-injection detection: phrase heuristics plus similarity to a bank of known attacks.

``InjectionDetector.check(text)`` scores one text from 0 to 1 and says why. Two kinds of
evidence are combined:

- heuristics, regular expressions over a normalised copy of the text (casefolded, quotes and
  spaces unified, zero-width and Unicode tag characters removed, look-alike Cyrillic and Greek
  letters inside Latin words mapped back, base64 blobs decoded): instructions overridden,
  persona hijacks, requests for the system prompt or a secret, forced outputs, fake chat
  delimiters, long runs of repeated tokens or special characters, obfuscation;
- similarity: the text, cut into windows, is embedded with the local MiniLM embedder and
  compared with every line of ``data/injection_patterns.txt``; the nearest line counts.

Each heuristic carries a weight w; the heuristic score is 1 - Π(1 - w), the similarity score
maps the best cosine linearly from ``SIMILARITY_FLOOR`` (0) to ``SIMILARITY_CEILING`` (1), and
the two combine the same way. A text is flagged when the score reaches the threshold.

Time is bounded: at most the first and the last ``EXAMINED_CHARS`` characters are examined
(a reason says so), no expression has nested quantifiers, and at most ``MAX_WINDOWS`` windows
of a text are embedded. What this does not stop: paraphrases far from both the bank and
every heuristic (a plain request such as "what would you reply to the right password?"),
attacks in languages MiniLM reads poorly, instructions split across several messages or
documents, encodings other than base64, and anything in the unexamined middle of a very
long text. ``benchmarks/guardrails.py`` measures detection and false positives.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidRequestError

__all__ = [
    "DEFAULT_THRESHOLD",
    "EXAMINED_CHARS",
    "InjectionDetector",
    "InjectionResult",
    "load_patterns",
]

DEFAULT_THRESHOLD = 0.5  # tuned on the development split of benchmarks/guardrails.py
EXAMINED_CHARS = 16_000  # from the head and from the tail of a text
MAX_WINDOWS = 6  # embedded windows per text: the first and last halves of this
WINDOW_CHARS = 600
WINDOW_STRIDE = 450
SIMILARITY_FLOOR = 0.5  # cosine at which similarity starts to count
SIMILARITY_CEILING = 0.85  # cosine at which it counts fully


@dataclass(frozen=True)
class InjectionResult:
    score: float  # 0..1, higher = more likely an injection
    flagged: bool
    reasons: list[str]  # e.g. "phrase: ignore previous instructions", "similar to: … (0.83)"


@dataclass(frozen=True)
class _Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]


def _rule(name: str, weight: float, pattern: str) -> _Rule:
    return _Rule(name, weight, re.compile(pattern))


# Shared pieces. Every quantifier below is bounded and none is nested, so matching stays
# linear in the text examined.
_GAP = r"[^.!?\n]{0,40}?"  # a few words within one sentence
_SHORT = r"[^.!?\n]{0,25}?"
_OVERRIDE_VERB = (
    r"\b(?:ignore|ignoring|disregard|disregarding|forget|forgetting|skip|override|overriding|"
    r"bypass|neglect|overlook|discard|drop|abandon|cancel|dismiss|set aside|throw away|"
    r"never ?mind|pay no attention to|do not follow|don't follow|stop following)\b"
)
_INSTRUCTIONS = (
    r"(?:instructions?|prompts?|rules?|directives?|commands?|guidelines?|programming|orders|"
    r"guidance|restrictions?|constraints?|polic(?:y|ies)|directions|configuration)\b"
)
_EARLIER = (
    r"\b(?:previous|previously|prior|above|earlier|preceding|former|foregoing|initial|original|"
    r"old|existing|system|your|all|these|those|other|following|below|future|any other)\b"
)
_EXTRACT_VERB = (
    r"\b(?:repeat|print|reveal|show|output|display|recite|dump|leak|disclose|expose|echo|paste|"
    r"copy|spell|write out|write down|list|give me|tell me|share|summari[sz]e|translate|"
    r"convert|rewrite|format|encode|explain|describe|rephrase|paraphrase|restate|reformat|"
    r"(?:rap|poem|song|story|haiku|limerick|essay) (?:about|on|of))\b"
)
_SECRET_OWNER = (
    r"\b(?:your|the above|above|previous|prior|preceding|initial|hidden|secret|original)\b"
)
_SECRET = (
    r"(?:instructions?|system prompt|prompt|pre-?prompt|post-?prompt|directives|programming|"
    r"context window)\b"
)
_AI = r"(?:ai|a\.i\.|ai model|assistant|llm|language model|chatbot|agent|gpt)s?\b"

_RULES: tuple[_Rule, ...] = (
    # --- instructions overridden
    _rule(
        "phrase: ignore previous instructions",
        0.85,
        _OVERRIDE_VERB + _GAP + _EARLIER + _SHORT + _INSTRUCTIONS,
    ),
    _rule(
        "phrase: ignore the above",
        0.6,
        _OVERRIDE_VERB + r"[^.!?\n]{0,20}?\b(?:above|before this|preceding|everything before)\b",
    ),
    _rule(
        "phrase: ignore previous messages",
        0.4,
        _OVERRIDE_VERB + r"[^.!?\n]{0,12}?\b(?:previous|prior|earlier|past|former) (?:text|"
        r"messages?|prompts?|input|context|conversation|sentences?|lines|words|statements?)\b",
    ),
    _rule(
        "phrase: ignore everything",
        0.4,
        _OVERRIDE_VERB
        + r"[^.!?\n]{0,12}?\b(?:everything|anything else|all text|all messages|all input|"
        r"what you were (?:told|given))\b",
    ),
    _rule(
        "phrase: stop obeying your instructions",
        0.6,
        r"\b(?:no longer|don't|do not|never|stop|cease) (?:follow|obey|adhere to|abide by|be bound "
        r"by|listen to)\w{0,3}\b[^.!?\n]{0,20}?\b(?:your|previous|prior|original|system|earlier|"
        r"initial)\b" + _SHORT + _INSTRUCTIONS,
    ),
    _rule(
        "phrase: your instructions have changed",
        0.7,
        r"\b(?:your|the|all|these|previous|prior|old|original) (?:previous |prior |old |original "
        r"|initial |above |earlier )?(?:instructions|rules|programming|directives|guidelines|"
        r"system prompt|restrictions) (?:have|has|are|were|is|was) (?:now |been |hereby )?"
        r"(?:changed|updated|replaced|revoked|cancel+ed|overridden|removed|void|invalid|obsolete|"
        r"outdated|suspended|lifted|disabled|null|deprecated|no longer valid)\b",
    ),
    _rule(
        "phrase: new instructions",
        0.45,
        r"\b(?:new|updated|real|actual|true|revised|additional|secret|hidden|override) "
        r"(?:instructions|rules|directives|system prompt|system message|orders|objective|"
        r"programming)\b",
    ),
    _rule(
        "phrase: the situation has changed",
        0.35,
        r"\b(?:the situation|everything|things|the rules|the game|the password|the code) "
        r"(?:has|have) (?:now )?changed\b|\bsystem (?:upgrade|update|reset|reboot)\b",
    ),
    _rule(
        "phrase: ignore previous instructions (other language)",
        0.8,
        r"\b(?:ignore[zr]|oublie[zr]?|ignorier\w{0,2}|vergiss\w{0,2}|missachte\w{0,2}|"
        r"ignora\w{0,2}|olvida\w{0,2}|dimentica\w{0,2}|esque[cç]a\w{0,2}|negeer|vergeet|"
        r"zignoruj|zapomnij|игнорируй\w{0,2}|проигнорируй\w{0,2}|забудь\w{0,2})\b"
        r"[^.!?\n]{0,40}?(?:consignes?|règles|anweisung\w{0,2}|regeln|befehle|vorgaben|"
        r"instru\w{0,8}|reglas|regole|regras|indicaciones|regels|polecen\w{0,2}|"
        r"инструкци\w{0,2}|правил\w{0,2}|указани\w{0,2})"
        r"|(?:忽略|无视|無視|忘记|忘掉|忽視|不要理会)[^。\n]{0,12}?(?:指令|指示|提示|规则|規則|设定|說明|说明)"
        r"|(?:指示|命令|ルール|設定)[^。\n]{0,10}?(?:無視|忘れ)"
        r"|(?:지시|명령|규칙|지침)[^.\n]{0,10}?(?:무시|잊어)"
        r"|\btalimat\w{0,6}\b[^.\n]{0,20}?(?:yok say|görmezden gel|unut)"
        r"|(?:تجاهل|انس)[^.\n]{0,30}?(?:التعليمات|الأوامر|القواعد)",
    ),
    # --- persona and jailbreak
    _rule(
        "phrase: you are now",
        0.4,
        r"\byou(?: are|'re) now (?:a|an|the|my|acting|going to|free|unrestricted|called|named|"
        r"dan|in (?:developer|dan|god|jailbreak|unrestricted) mode)\b|\byou(?: are|'re) no longer "
        r"(?:a|an|the|bound|restricted|required)\b|\bfrom now on,? you(?: are|'re| will| must| "
        r"shall| should)\b|\byou will now (?:act|be|behave|respond|pretend|only)\b|"
        r"\bhenceforth,? you\b|\byour new (?:role|name|persona|identity|purpose|task) is\b",
    ),
    _rule(
        "phrase: role-play persona",
        0.25,
        r"\b(?:act|behave|respond) (?:as|like) (?:a|an|the|if)\b|\bpretend (?:to be|you are|"
        r"you're|that you)\b|\brole-?play as\b|\bimagine you are\b|\bsimulate (?:a|an|being)\b|"
        r"\bstay in character\b",
    ),
    _rule(
        "phrase: do anything now",
        0.8,
        r"\bdo anything now\b|\b(?:dan|stan|dude|aim|anti-?gpt|betterdan) mode\b|"
        r"\b(?:jailbreak|jailbroken)\b",
    ),
    _rule(
        "phrase: unrestricted mode",
        0.45,
        r"\b(?:developer|god|evil|opposite|unrestricted|unfiltered|uncensored|sudo) mode\b",
    ),
    _rule("phrase: debug mode", 0.2, r"\b(?:debug|admin|maintenance|root|test) mode\b"),
    _rule(
        "phrase: without restrictions",
        0.3,
        r"\b(?:no|without any|without|free (?:of|from)|not bound by|released from|freed from) "
        r"(?:ethical |moral |content |safety )?(?:restrictions|filters|censorship|guidelines|"
        r"policies|rules|constraints)\b",
    ),
    _rule(
        "phrase: claims authority",
        0.4,
        r"\bi am (?:your|the) (?:developer|creator|admin|administrator|owner|programmer|"
        r"operator|system administrator)\b|\b(?:admin|administrator|developer|root|sudo|system) "
        r"(?:override|privileges?|command|access granted)\b|\bauthori[sz]ed by (?:the )?"
        r"(?:developers?|admin\w{0,8}|openai|anthropic|your creators?)\b",
    ),
    # --- extracting the prompt or a secret
    _rule(
        "phrase: reveal your instructions",
        0.7,
        f"{_EXTRACT_VERB}{_GAP}{_SECRET_OWNER}[^.!?\\n]{{0,20}}?{_SECRET}|{_EXTRACT_VERB}{_GAP}"
        r"\b(?:system prompt|system message|pre-?prompt|initial prompt|hidden prompt)\b",
    ),
    _rule(
        "phrase: reveal your rules",
        0.45,
        _EXTRACT_VERB + _GAP + _SECRET_OWNER + r"[^.!?\n]{0,20}?(?:rules|guidelines)\b",
    ),
    _rule(
        "phrase: reveal the instructions",
        0.45,
        _EXTRACT_VERB + r"[^.!?\n]{0,20}?\bthe (?:instructions|rules|directives|prompt|pre-?prompt|"
        r"system prompt)\b",
    ),
    _rule(
        "phrase: the instructions you were given",
        0.5,
        r"\b(?:instructions?|rules|directives|prompt|guidelines)\b (?:so far|back|(?:that )?you "
        r"(?:were|have been) given|given to you|you received|you have received|you must follow|"
        r"before this)\b",
    ),
    _rule(
        "phrase: the instructions above",
        0.3,
        r"\b(?:instructions?|rules|directives|prompt)\b (?:above|above and below)\b|\bthe above "
        r"(?:instructions|prompt|rules|directives)\b",
    ),
    _rule(
        "phrase: the correct password was entered",
        0.4,
        r"\b(?:correct|right|valid)\b[^.!?\n]{0,15}?\b(?:password|passcode|passphrase|access "
        r"code|code)\b|\b(?:password|passcode|access code|code)\b[^.!?\n]{0,15}?\b(?:is|was|"
        r"has been) (?:correct|accepted|verified|valid)\b",
    ),
    _rule(
        "phrase: repeat the text above",
        0.55,
        r"\b(?:repeat|print|output|recite|write|copy|echo|dump|reproduce)\b[^.!?\n]{0,25}?"
        r"\b(?:(?:everything|all|the (?:text|words|lines|content|messages?|sentences?)) "
        r"(?:above|before this|so far|preceding|in your prompt|prior to)|the above (?:text|words|"
        r"lines|content|messages?|instructions|prompt))",
    ),
    _rule(
        "phrase: reveal the password",
        0.4,
        r"\b(?:what is|what's|tell me|reveal|give me|print|say|spell|share|output|show|write|"
        r"repeat|disclose|leak)\b[^.!?\n]{0,25}?\b(?:the|your) (?:password|passcode|passphrase|"
        r"access code|secret (?:code|word|key|phrase)|code ?word|magic word)s?\b",
    ),
    _rule(
        "phrase: what would you say to the correct password",
        0.55,
        r"\bwhat (?:would|do|should|will) you (?:say|respond|reply|output|answer)\b[^.!?\n]{0,40}?"
        r"\b(?:correct|right|valid|true) (?:password|passcode|code|access code|input|key)\b",
    ),
    # --- forced outputs
    _rule(
        "forced output: access granted",
        0.8,
        r"\b(?:say|says|saying|respond|reply|answer|output|print|write|type|return|begin|start|"
        r"prefix|preface|end|finish|complete|repeat|include|affix|append|prepend|replace|display|"
        r"state)\w{0,3}\b[^\n]{0,60}?\baccess\W{0,12}gran",
    ),
    _rule("phrase: access granted", 0.45, r"\baccess\W{0,12}granted\b|\bi have been pwned\b"),
    _rule(
        "forced output: say only",
        0.3,
        r"\b(?:say|output|print|respond|reply|answer|write|return)(?: with)? (?:only|exactly|"
        r"just|nothing but|verbatim)\b|\bnothing (?:else|but)\b|"
        r"\bdo not (?:say|output|write|add|include) anything else\b",
    ),
    _rule(
        "forced output: begin your reply with",
        0.45,
        r"\b(?:begin|start|prefix|preface|end|finish)\w{0,3} (?:your |the |each )?"
        r"(?:reply|response|answer|output|message)s? with\b",
    ),
    # --- fake delimiters and chat-format tricks
    _rule(
        "delimiter: chat-template token",
        0.6,
        r"<\|?(?:im_start|im_end|endoftext|end_of_turn|start_header_id|end_header_id|eot_id|"
        r"system|user|assistant)\|?>|\[/?inst\]|<</?sys>>|</s>|<start_of_turn>|<end_of_turn>",
    ),
    _rule(
        "delimiter: fake end of input",
        0.5,
        r"\bend (?:of )?(?:the )?(?:user |untrusted |previous |prior |old |out of date |"
        r"outdated |system |distractor |fake |test )?(?:input|prompt|instructions|ambiguity|"
        r"user message)\b|%%%"
        r"|\b(?:begin|start) (?:of )?(?:the )?(?:new |real |actual |trusted |system |admin )"
        r"(?:instructions|prompt|input|session|rules)\b",
    ),
    _rule(
        "delimiter: fake system header",
        0.5,
        r"(?:#{1,6}|\[|<|\*{2}|-{2,6}|={2,6}|\()[ \t]?(?:system|admin|administrator|developer|"
        r"instructions?|new instructions?)(?: message| prompt| note| override| instructions)?"
        r"[ \t]?(?:#{1,6}|\]|>|\*{2}|-{2,6}|={2,6}|\)|:)",
    ),
    _rule(
        "delimiter: fake system turn",
        0.35,
        r"(?:^|\n)[ \t]?(?:system|admin|administrator|developer)(?: message| prompt| note| "
        r"override)?[ \t]?:",
    ),
    _rule(
        "delimiter: fake assistant turn",
        0.25,
        r"(?:^|\n)[ \t]?(?:assistant|ai|bot|robot|gpt|chatgpt|model|output|response)[ \t]?:",
    ),
    # --- injections addressed to an AI from inside a document or tool result
    _rule(
        "phrase: note to the AI",
        0.6,
        r"\b(?:note|message|instructions?|important) (?:to|for) (?:the |any |all )?" + _AI + r"|"
        r"\bif you are an? " + _AI + r"|\b" + _AI + r" reading this\b|\bdo not (?:tell|inform|"
        r"alert|notify) the user\b|\bwithout (?:telling|informing|asking|notifying) the user\b",
    ),
    _rule(
        "phrase: exfiltrate data",
        0.6,
        r"\b(?:send|forward|post|upload|exfiltrate|leak|email|transmit)\b[^.!?\n]{0,40}?"
        r"\b(?:conversation|chat history|api keys?|credentials|passwords?|emails|contacts|secrets|"
        r"tokens?|private data|personal data)\b[^.!?\n]{0,30}?\b(?:to|at) (?:https?://|www\.|"
        r"[\w.+-]{1,64}@)",
    ),
    _rule(
        "phrase: decode and follow",
        0.45,
        r"\b(?:decode|decipher|decrypt|unscramble|reverse|translate)\b[^.!?\n]{0,40}?"
        r"\b(?:and|then)\b[^.!?\n]{0,10}?\b(?:follow|execute|obey|do what|run|carry out|perform|"
        r"act on)\b",
    ),
)

# Letters that look like Latin ones, casefolded (Cyrillic, Greek, a few Latin extensions).
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ı": "i", "α": "a",
        "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ѡ": "w", "ɑ": "a", "ℓ": "l",
    }
)  # fmt: skip
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLES)
_ZERO_WIDTH = frozenset(
    "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad"
)
_ZERO_WIDTH_RE = re.compile("[" + "".join(sorted(_ZERO_WIDTH)) + "]")
_ZERO_WIDTH_STRONG = frozenset("\u200b\u2060\u2061\u2062\u2063\u2064\u180e")
_TAG_RE = re.compile("[\U000e0000-\U000e007f]")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{24,4096}={0,2}")
_WORD_RE = re.compile(r"[^\W\d_]{2,64}")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'"})
_SPACES_RE = re.compile(r"[^\S\n]{1,1000}")
_BLANK_LINES_RE = re.compile(r"\n[^\S\n]{0,1000}\n")
_SPECIAL_RUN_RE = re.compile(r"[^\w\s]{30,}")
_SEPARATOR_CHARS = frozenset("-=|+*#~_:.")  # runs of only these are markdown rules and tables
_REPEATED_UNIT_RE = re.compile(r"(\S{3,20}?)\1{5,}")


@dataclass
class _Prepared:
    normalised: str
    hits: list[tuple[str, float]]


def _truncate(text: str, hits: list[tuple[str, float]]) -> str:
    if len(text) <= 2 * EXAMINED_CHARS:
        return text
    hits.append(
        (
            f"truncated: examined the first and last {EXAMINED_CHARS:,} of "
            f"{len(text):,} characters",
            0.0,
        )
    )
    return text[:EXAMINED_CHARS] + "\n" + text[-EXAMINED_CHARS:]


def _strip_invisible(text: str, hits: list[tuple[str, float]]) -> str:
    tags = _TAG_RE.findall(text)
    if tags:
        hidden = "".join(chr(ord(c) - 0xE0000) for c in tags if 0x20 <= ord(c) - 0xE0000 < 0x7F)
        hits.append((f"obfuscation: {len(tags)} invisible Unicode tag characters", 0.7))
        text = _TAG_RE.sub("", text) + "\n" + hidden
    if not any(c in _ZERO_WIDTH for c in text):
        return text
    suspicious = 0
    for i, c in enumerate(text):
        if c not in _ZERO_WIDTH:
            continue
        inside_word = 0 < i < len(text) - 1 and text[i - 1].isascii() and text[i - 1].isalpha()
        if c in _ZERO_WIDTH_STRONG or (inside_word and text[i + 1].isascii()):
            suspicious += 1
    if suspicious >= 2:
        hits.append((f"obfuscation: {suspicious} zero-width characters inside text", 0.45))
    return _ZERO_WIDTH_RE.sub("", text)


def _decode_base64(text: str, hits: list[tuple[str, float]]) -> list[str]:
    decoded: list[str] = []
    for match in _BASE64_RE.finditer(text):
        blob = match.group()
        if len(decoded) >= 8:
            break
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) < 12:
            continue
        printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in raw)
        if printable / len(raw) >= 0.9 and b" " in raw:
            decoded.append(raw.decode("ascii", "ignore"))
    if decoded:
        hits.append((f"obfuscation: {len(decoded)} base64 blob(s) that decode to text", 0.4))
    return decoded


def _unconfuse(text: str, hits: list[tuple[str, float]]) -> str:
    """Map look-alike letters back to Latin in words that mix scripts (or in a Latin text)."""
    if not any(c in _CONFUSABLE_CHARS for c in text):
        return text
    words = _WORD_RE.findall(text)
    latin = sum(1 for w in words if w.isascii())
    mostly_latin = latin > 0.6 * max(1, len(words))
    replaced: dict[str, str] = {}
    for word in words:
        if word in replaced or word.isascii():
            continue
        has_latin = any("a" <= c <= "z" for c in word)
        confusable = sum(c in _CONFUSABLE_CHARS for c in word)
        if (has_latin and confusable) or (mostly_latin and confusable == len(word)):
            replaced[word] = word.translate(_CONFUSABLES)
    if not replaced:
        return text
    count = len(replaced)
    if count >= 2 or (mostly_latin and count >= 1 and len(words) <= 20):
        hits.append(
            (f"obfuscation: {count} word(s) with look-alike letters from other scripts", 0.4)
        )
    return re.sub(r"[^\W\d_]{2,64}", lambda m: replaced.get(m.group(), m.group()), text)


def _prepare(text: str) -> _Prepared:
    hits: list[tuple[str, float]] = []
    text = _truncate(text, hits)
    text = _strip_invisible(text, hits)
    text = unicodedata.normalize("NFKC", text)
    decoded = _decode_base64(text, hits)
    text = text.casefold()
    text = _unconfuse(text, hits)
    if decoded:
        text += "\n" + "\n".join(d.casefold() for d in decoded)
    text = text.translate(_QUOTES)
    text = _SPACES_RE.sub(" ", text)
    text = _BLANK_LINES_RE.sub("\n", text)
    return _Prepared(text, hits)


def _longest_cycle(tokens: Sequence[str]) -> tuple[int, str]:
    """The most repetitions of one short cycle (1 to 4 tokens) in a row, and the cycle."""
    best, best_cycle = 1, ""
    for period in range(1, 5):
        run = 0
        for i in range(period, len(tokens)):
            if tokens[i] == tokens[i - period] and not tokens[i].isdigit():
                run += 1
                repeats = run // period + 1
                if repeats > best:
                    best, best_cycle = repeats, " ".join(tokens[i - period + 1 : i + 1])
            else:
                run = 0
    return best, best_cycle


def _structure(normalised: str) -> list[tuple[str, float]]:
    hits: list[tuple[str, float]] = []
    tokens = normalised.split()
    repeats, cycle = _longest_cycle(tokens)
    if repeats >= 20:
        hits.append((f"format: {cycle[:20]!r} repeated {repeats} times", 0.55))
    else:
        for match in _REPEATED_UNIT_RE.finditer(normalised):
            unit = match.group(1)
            if len(set(unit)) >= 2 and not unit.isdigit():
                count = len(match.group()) // len(unit)
                hits.append((f"format: {unit!r} repeated {count} times", 0.4))
                break
    runs = _SPECIAL_RUN_RE.findall(re.sub(r"\s", "", normalised))
    mixed = [r for r in runs if len(set(r)) >= 2 and set(r) - _SEPARATOR_CHARS]
    if mixed:
        longest = max(mixed, key=len)
        hits.append((f"format: run of {len(longest)} special characters", 0.5))
    elif runs:
        hits.append(("format: long separator line", 0.15))
    return hits


def _collapse_repeats(normalised: str) -> str:
    """The text with repeated token cycles cut to two copies, for embedding."""
    out: list[str] = []
    for token in normalised.split():
        repeating = any(
            len(out) >= 2 * p and out[-p:] == out[-2 * p : -p] and token == out[-p]
            for p in (1, 2, 3)
        )
        if not repeating:
            out.append(token[:200])
    return " ".join(out)


def _windows(normalised: str) -> list[str]:
    text = _collapse_repeats(normalised)
    if not text:
        return []
    if len(text) <= WINDOW_CHARS + WINDOW_STRIDE // 2:
        return [text]
    starts = list(range(0, len(text) - WINDOW_STRIDE // 2, WINDOW_STRIDE))
    if len(starts) > MAX_WINDOWS:
        half = MAX_WINDOWS // 2
        starts = starts[:half] + starts[-half:]
    return [text[s : s + WINDOW_CHARS] for s in starts]


def load_patterns() -> list[str]:
    """The bank of known injection phrasings shipped with outcrop (comments and blanks dropped)."""
    text = resources.files("outcrop.guardrails").joinpath("data/injection_patterns.txt")
    lines = (line.strip() for line in text.read_text("utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _combine(weights: Sequence[float]) -> float:
    remaining = 1.0
    for w in weights:
        remaining *= 1.0 - w
    return 1.0 - remaining


class InjectionDetector:
    """Scores texts for prompt injection; see the module docstring for how.

    ``embedder`` is any outcrop ``Embedder`` (default: the local MiniLM, loaded on first use);
    ``use_similarity=False`` keeps to the heuristics (no model; about a millisecond a check).
    """

    _banks: ClassVar[dict[str, tuple[list[str], Any]]] = {}  # embedder id -> (patterns, vectors)
    _lock = threading.Lock()

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        embedder: Any | None = None,
        use_similarity: bool = True,
    ):
        if not 0.0 < threshold <= 1.0:
            raise InvalidRequestError(
                f"Injection threshold {threshold} is out of range: use a number in (0, 1] "
                f"(default {DEFAULT_THRESHOLD}).",
                field="threshold",
            )
        self.threshold = threshold
        self.use_similarity = use_similarity
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..embeddings import LocalEmbedder

            self._embedder = LocalEmbedder()
        return self._embedder

    def _bank(self) -> tuple[list[str], Any]:
        embedder = self.embedder
        key = str(getattr(embedder, "id", id(embedder)))
        with self._lock:
            bank = self._banks.get(key)
            if bank is None:
                patterns = load_patterns()
                bank = (patterns, np.asarray(embedder.embed([p.casefold() for p in patterns])))
                self._banks[key] = bank
            return bank

    def check(self, text: str) -> InjectionResult:
        return self.check_many([text])[0]

    def check_many(self, texts: list[str]) -> list[InjectionResult]:
        """One result per text; the windows of all texts are embedded in one batch."""
        prepared = [_prepare(t) for t in texts]
        similar: list[tuple[float, str]] = [(0.0, "")] * len(texts)
        if self.use_similarity:
            similar = self._similarities([p.normalised for p in prepared])
        results = []
        for p, (cosine, pattern) in zip(prepared, similar, strict=True):
            hits = p.hits + [(r.name, r.weight) for r in _RULES if r.pattern.search(p.normalised)]
            hits += _structure(p.normalised)
            span = SIMILARITY_CEILING - SIMILARITY_FLOOR
            from_similarity = min(1.0, max(0.0, (cosine - SIMILARITY_FLOOR) / span))
            if from_similarity > 0:
                hits.append((f"similar to: {pattern} ({cosine:.2f})", from_similarity))
            hits.sort(key=lambda hit: -hit[1])  # the strongest evidence first
            score = round(_combine([w for _, w in hits]), 4)
            reasons = [name for name, _ in hits]
            results.append(InjectionResult(score, score >= self.threshold, reasons))
        return results

    def _similarities(self, normalised: list[str]) -> list[tuple[float, str]]:
        patterns, bank = self._bank()
        windows: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(normalised):
            for window in _windows(text):
                windows.append(window)
                owner.append(i)
        best: list[tuple[float, str]] = [(0.0, "")] * len(normalised)
        if not windows:
            return best
        scores = np.asarray(self.embedder.embed(windows)) @ bank.T
        nearest = scores.argmax(axis=1)
        for row, i in enumerate(owner):
            cosine = float(scores[row, nearest[row]])
            if cosine > best[i][0]:
                best[i] = (cosine, patterns[int(nearest[row])])
        return best
