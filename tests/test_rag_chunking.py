"""Tests for outcrop.rag.chunking: token-bounded, offset-exact chunks for a retrieval index."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable

import pytest

from outcrop.rag.chunking import Chunk, ChunkingSettings, chunk_text

Counter = Callable[[str], int]


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text) // 4 + 1


def superadditive(text: str) -> int:
    """Not additive: a concatenation costs more than its parts (two words cost 3, not 2)."""
    n = len(text.split())
    return max(1, 2 * n - 1)


TOKENIZERS = [pytest.param(words, id="words"), pytest.param(chars, id="chars")]

_HEADING_LINE = re.compile(r"^(#{1,6})[ \t]+(\S.*?)[^\S\n]*$", re.M)


def headings(doc: str) -> list[tuple[int, tuple[str, ...]]]:
    """(start offset, heading path) of every heading line, computed independently."""
    out: list[tuple[int, tuple[str, ...]]] = []
    stack: list[tuple[int, str]] = []
    for m in _HEADING_LINE.finditer(doc):
        level = len(m.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, m.group(2)))
        out.append((m.start(), tuple(t for _, t in stack)))
    return out


def check_invariants(
    doc: str, chunks: list[Chunk], settings: ChunkingSettings, count: Counter
) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = bytearray(len(doc))
    for c in chunks:
        assert c.text == doc[c.start : c.end]
        assert c.text, "empty chunk"
        assert not c.text[0].isspace() and not c.text[-1].isspace()
        assert c.tokens == count(c.text)
        assert c.tokens <= settings.max_tokens
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    missed = [i for i, ch in enumerate(doc) if not ch.isspace() and not covered[i]]
    assert not missed, f"uncovered offsets {missed[:10]}"

    heads = headings(doc) if settings.respect_headings else []
    starts = {c.start for c in chunks}
    for c in chunks:
        inside = [h for h, _ in heads if c.start < h < c.end]
        assert not inside, f"chunk {c.index} spans a heading"
        enclosing = [path for h, path in heads if h <= c.start]
        assert c.heading_path == (enclosing[-1] if enclosing else ())
    for h, _ in heads:
        assert h in starts, "a section's first chunk starts at its heading line"

    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start and a.end < b.end
        if b.start < a.end:
            assert not [h for h, _ in heads if a.start < h <= b.start], "overlap across heading"
            before = doc[b.start - 1]
            assert before.isspace() or before in "。！？」』）", "overlap starts at a word/sentence"
            assert count(doc[b.start : a.end]) <= settings.overlap_tokens


# -- basics ----------------------------------------------------------------------------------

DOC = """Outcrop builds generative-AI applications. It runs on one laptop.

# Install

Install it with pip. It needs Python 3.11 or newer.

## On Linux

Use a virtual environment. Then run the installer. It downloads a small model.
The model is cached in the home folder.

## On macOS

The same steps work. Apple silicon is supported.

# Usage

Run outcrop chat to talk to the default model. Type a question and press enter.
"""


@pytest.mark.parametrize("count", TOKENIZERS)
@pytest.mark.parametrize("max_tokens", [16, 24, 40, 200])
def test_sample_document_invariants(count: Counter, max_tokens: int) -> None:
    settings = ChunkingSettings(max_tokens=max_tokens, overlap_tokens=4, min_tokens=2)
    chunks = chunk_text(DOC, count, settings)
    check_invariants(DOC, chunks, settings, count)
    assert {c.heading_path for c in chunks} == {
        (),
        ("Install",),
        ("Install", "On Linux"),
        ("Install", "On macOS"),
        ("Usage",),
    }


def test_default_settings_keep_small_sections_whole() -> None:
    chunks = chunk_text(DOC, words)
    check_invariants(DOC, chunks, ChunkingSettings(), words)
    assert [c.text.split("\n", 1)[0] for c in chunks] == [
        "Outcrop builds generative-AI applications. It runs on one laptop.",
        "# Install",
        "## On Linux",
        "## On macOS",
        "# Usage",
    ]
    assert chunks[2].text.endswith("The model is cached in the home folder.")


def test_empty_and_whitespace_only_input() -> None:
    assert chunk_text("", words) == []
    assert chunk_text(" \n\t\n  \r\n \u3000 ", words) == []
    assert chunk_text("\n\n", chars, ChunkingSettings(respect_headings=False)) == []


def test_chunks_are_trimmed() -> None:
    doc = "\n\n   Hello there.   \n\n\t General Kenobi.  \n"
    chunks = chunk_text(doc, words)
    assert len(chunks) == 1
    (chunk,) = chunks
    assert chunk.text == "Hello there.   \n\n\t General Kenobi."
    assert doc[chunk.start : chunk.end] == chunk.text
    assert chunk.tokens == 4
    assert chunk.heading_path == ()


def test_document_without_headings() -> None:
    rng = random.Random(7)
    paragraphs = [
        " ".join(f"Word{rng.randint(0, 99)} is here number {i}." for i in range(rng.randint(1, 9)))
        for _ in range(30)
    ]
    doc = "\n\n".join(paragraphs)
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=8, min_tokens=4)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    assert len(chunks) > 5
    assert all(c.heading_path == () for c in chunks)


# -- headings --------------------------------------------------------------------------------


def test_nested_heading_paths() -> None:
    doc = "# A\na text\n\n## B\nb text\n\n### C\nc text\n\n## D\nd text\n\n# E\ne text\n"
    chunks = chunk_text(doc, words, ChunkingSettings(max_tokens=50, overlap_tokens=4))
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("# A\na text", ("A",)),
        ("## B\nb text", ("A", "B")),
        ("### C\nc text", ("A", "B", "C")),
        ("## D\nd text", ("A", "D")),
        ("# E\ne text", ("E",)),
    ]


def test_heading_path_skipping_levels_and_closing_hashes() -> None:
    doc = "preamble\n# Top #\n### Deep\nx\n## Mid ##\ny\n"
    chunks = chunk_text(doc, words)
    assert [c.heading_path for c in chunks] == [(), ("Top",), ("Top", "Deep"), ("Top", "Mid")]
    assert chunks[0].text == "preamble"
    assert chunks[1].text == "# Top #"


def test_no_chunk_spans_two_headings() -> None:
    body = " ".join(f"Fact {i} about this part." for i in range(40))
    doc = "\n\n".join(f"{'#' * (1 + i % 3)} Part {i}\n\n{body}" for i in range(6))
    settings = ChunkingSettings(max_tokens=50, overlap_tokens=10, min_tokens=5)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    for i in range(6):
        part = [c for c in chunks if c.heading_path[-1] == f"Part {i}"]
        assert len(part) > 1
        assert part[0].text.startswith(f"{'#' * (1 + i % 3)} Part {i}\n")
        assert all("Part" not in c.text for c in part[1:])


def test_hash_lines_that_are_not_headings() -> None:
    doc = "#hashtag is not a heading\n\n```bash\n# install deps\npip install x\n```\n\n# Real\nok\n"
    chunks = chunk_text(doc, words)
    assert [c.heading_path for c in chunks] == [(), ("Real",)]
    assert "# install deps" in chunks[0].text


def test_respect_headings_off_packs_across_headings() -> None:
    doc = "# A\nalpha\n\n# B\nbeta\n"
    settings = ChunkingSettings(respect_headings=False)
    chunks = chunk_text(doc, words, settings)
    assert [(c.text, c.heading_path) for c in chunks] == [("# A\nalpha\n\n# B\nbeta", ())]


# -- splitting -------------------------------------------------------------------------------


def test_paragraphs_kept_whole_when_they_fit() -> None:
    rng = random.Random(3)
    paragraphs = [
        " ".join(f"Claim {rng.randint(0, 9)} holds." for _ in range(rng.randint(4, 9)))
        for _ in range(12)
    ]
    doc = "\n\n".join(paragraphs)
    settings = ChunkingSettings(max_tokens=30, overlap_tokens=0, min_tokens=0)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    pos = 0
    for paragraph in paragraphs:
        start = doc.index(paragraph, pos)
        pos = start + len(paragraph)
        holders = [c for c in chunks if c.start <= start and pos <= c.end]
        assert len(holders) == 1, f"paragraph split: {paragraph!r}"
    # Without overlap each chunk is a run of whole paragraphs.
    assert all(c.text in paragraphs or "\n\n" in c.text for c in chunks)


def test_long_paragraph_split_at_sentences() -> None:
    sentences = [f"Sentence number {i} says something." for i in range(20)]
    doc = " ".join(sentences)
    settings = ChunkingSettings(max_tokens=22, overlap_tokens=0, min_tokens=0)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    assert [c.text for c in chunks] == [" ".join(sentences[i : i + 4]) for i in range(0, 20, 4)]


def test_sentence_boundaries_need_uppercase_digit_or_quote() -> None:
    doc = 'E.g. this stays. Next one. 42 is a number. "Quoted" too. lower case goes on.'
    settings = ChunkingSettings(max_tokens=16, overlap_tokens=0, min_tokens=0)

    def count(text: str) -> int:  # 10 per sentence start, so no two sentences fit together
        return 1 + 9 * len(re.findall(r'(?:^|\s)["A-Z0-9]', text))

    chunks = chunk_text(doc, count, settings)
    assert [c.text for c in chunks] == [
        "E.g. this stays.",
        "Next one.",
        "42 is a number.",
        '"Quoted" too. lower case goes on.',
    ]


def test_sentence_longer_than_max_is_split_at_words() -> None:
    sentence = " ".join(f"w{i}" for i in range(100)) + "."
    doc = f"Short start. {sentence} Short end."
    settings = ChunkingSettings(max_tokens=30, overlap_tokens=0, min_tokens=0)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    assert len(chunks) >= 4
    for c in chunks:
        assert c.start == 0 or doc[c.start - 1] == " "
        assert c.end == len(doc) or doc[c.end] == " "
    assert max(c.tokens for c in chunks) == 30


@pytest.mark.parametrize("count", TOKENIZERS)
def test_single_long_word_is_split_by_characters(count: Counter) -> None:
    blob = "".join(random.Random(1).choice("ABCDEFGHabcdefgh0123456789+/") for _ in range(5000))
    doc = f"See https://example.com/{blob} for details."
    settings = ChunkingSettings(max_tokens=20, overlap_tokens=4, min_tokens=2)
    # The word tokenizer counts the blob as one token, so make it count characters inside words.
    tokenizer = count if count is chars else (lambda t: sum(len(w) // 8 + 1 for w in t.split()))
    chunks = chunk_text(doc, tokenizer, settings)
    check_invariants(doc, chunks, settings, tokenizer)
    inner = [c for c in chunks if c.start > doc.index("https") and c.end < doc.index(" for")]
    assert len(inner) > 10
    # Runs of one word are contiguous: hard splits repeat nothing.
    for a, b in itertools.pairwise(inner):
        assert a.end == b.start
    assert max(c.tokens for c in chunks) == settings.max_tokens


def test_tokenizer_over_max_for_one_character_is_an_error() -> None:
    with pytest.raises(ValueError, match="single character"):
        settings = ChunkingSettings(max_tokens=16, overlap_tokens=0, min_tokens=0)
        chunk_text("x" * 50, lambda t: 17 * len(t), settings)


def test_non_additive_tokenizer_is_respected() -> None:
    doc = " ".join(f"Item {i} is listed here." for i in range(80))
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=6, min_tokens=3)
    chunks = chunk_text(doc, superadditive, settings)
    check_invariants(doc, chunks, settings, superadditive)
    # Additive estimates would pack 8 sentences (40 words); the real count only allows 4.
    assert max(len(c.text.split()) for c in chunks) <= 20


# -- overlap and merging ---------------------------------------------------------------------


@pytest.mark.parametrize("count", TOKENIZERS)
def test_overlap_is_whole_trailing_sentences_within_bound(count: Counter) -> None:
    doc = "# Notes\n\n" + " ".join(f"Point {i} is made here." for i in range(60))
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=12, min_tokens=4)
    chunks = chunk_text(doc, count, settings)
    check_invariants(doc, chunks, settings, count)
    assert len(chunks) > 4
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "consecutive chunks of one section overlap"
        shared = doc[b.start : a.end]
        assert re.fullmatch(r"Point \d+ is made here\.( Point \d+ is made here\.)*", shared)
        assert count(shared) <= settings.overlap_tokens
        assert a.text.endswith(shared) and b.text.startswith(shared)


def test_overlap_falls_back_to_words_for_a_long_sentence() -> None:
    doc = " ".join(f"w{i}" for i in range(200)) + "."
    settings = ChunkingSettings(max_tokens=30, overlap_tokens=5, min_tokens=0)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    for a, b in itertools.pairwise(chunks):
        assert words(doc[b.start : a.end]) == 5


def test_no_overlap_when_zero_or_across_sections() -> None:
    doc = " ".join(f"Point {i} is made here." for i in range(60))
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=0, min_tokens=0)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    assert all(a.end < b.start for a, b in itertools.pairwise(chunks))
    assert "".join(c.text + " " for c in chunks).strip() == doc

    doc2 = "# A\n" + doc + "\n# B\n" + doc
    chunks2 = chunk_text(doc2, words, ChunkingSettings(max_tokens=40, overlap_tokens=10))
    b_first = next(c for c in chunks2 if c.heading_path == ("B",))
    before = chunks2[b_first.index - 1]
    assert before.heading_path == ("A",) and before.end < b_first.start


def test_tiny_tail_is_merged_into_previous_chunk() -> None:
    paragraphs = [f"Para {i} has five words." for i in range(6)] + ["A tiny tail."]
    doc = "\n\n".join(paragraphs)
    # New content is packed up to max - overlap = 32 tokens: six paragraphs (30 words).
    merged = chunk_text(
        doc, words, ChunkingSettings(max_tokens=40, overlap_tokens=8, min_tokens=10)
    )
    assert len(merged) == 1
    assert merged[0].text == doc and merged[0].tokens == 33
    apart = chunk_text(doc, words, ChunkingSettings(max_tokens=40, overlap_tokens=8, min_tokens=0))
    assert len(apart) == 2
    assert apart[1].text.endswith("A tiny tail.") and apart[1].start < apart[0].end


def test_tiny_tail_not_merged_past_max_tokens() -> None:
    paragraphs = [f"Para {i} has five words." for i in range(8)] + ["Tiny tail."]
    doc = "\n\n".join(paragraphs)
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=0, min_tokens=10)
    chunks = chunk_text(doc, words, settings)
    check_invariants(doc, chunks, settings, words)
    assert [c.tokens for c in chunks] == [40, 2]
    assert chunks[1].text == "Tiny tail."


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 15}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"overlap_tokens": -1}, "overlap_tokens"),
        ({"max_tokens": 64, "overlap_tokens": 32}, "overlap_tokens"),
        ({"max_tokens": 17, "overlap_tokens": 8, "min_tokens": 0}, "overlap_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"max_tokens": 40, "overlap_tokens": 0, "min_tokens": 40}, "min_tokens"),
    ],
)
def test_settings_validation(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ChunkingSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_edges_and_defaults() -> None:
    assert ChunkingSettings() == ChunkingSettings(200, 32, 24, True)
    edge = ChunkingSettings(max_tokens=16, overlap_tokens=7, min_tokens=15)
    assert (edge.max_tokens, edge.overlap_tokens, edge.min_tokens) == (16, 7, 15)
    assert ChunkingSettings(max_tokens=16, overlap_tokens=0, min_tokens=0).overlap_tokens == 0
    with pytest.raises(TypeError, match="max_tokens"):
        ChunkingSettings(max_tokens=100.0)  # type: ignore[arg-type]


# -- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", TOKENIZERS)
def test_non_ascii_offsets(count: Counter) -> None:
    doc = (
        "# Café crème\n\n"
        + " ".join(f"Ça coûte {i} €. Élodie préfère le thé glacé." for i in range(12))
        + "\n\n## 東京\n\n"
        + "".join(f"東京は日本の首都です{i}。大阪は大きな都市です！" for i in range(30))
        + "\n\nΕλληνικά κείμενα. Ωραία μέρα σήμερα.\n"
    )
    settings = ChunkingSettings(max_tokens=24, overlap_tokens=6, min_tokens=3)
    chunks = chunk_text(doc, count, settings)
    check_invariants(doc, chunks, settings, count)
    assert next(c.heading_path for c in chunks) == ("Café crème",)
    french = [c for c in chunks if c.heading_path == ("Café crème",)]
    assert len(french) > 2 and all("é" in c.text for c in french)
    cjk = [c for c in chunks if c.heading_path == ("Café crème", "東京")]
    assert cjk[0].text.startswith("## 東京\n")
    if count is words:  # the CJK paragraph has no spaces: one "word", one token
        assert len(cjk) == 1 and cjk[0].text.endswith("σήμερα.")
    else:  # split after CJK full stops, never mid-sentence
        assert len(cjk) > 2
        for c in cjk[:-1]:
            assert c.text[-1] in "。！"


def test_crlf_line_endings() -> None:
    doc = "# Title\r\n\r\nFirst line.\r\nSecond line.\r\n\r\n## Sub\r\nMore text.\r\n"
    chunks = chunk_text(doc, words)
    check_invariants(doc, chunks, ChunkingSettings(), words)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("# Title\r\n\r\nFirst line.\r\nSecond line.", ("Title",)),
        ("## Sub\r\nMore text.", ("Title", "Sub")),
    ]


# -- cost and determinism --------------------------------------------------------------------


def test_count_tokens_calls_scale_with_pieces() -> None:
    rng = random.Random(11)
    vocab = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    paragraphs = []
    for _ in range(400):
        sentences = [
            " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 15))).capitalize() + "."
            for _ in range(rng.randint(1, 6))
        ]
        paragraphs.append(" ".join(sentences))
    doc = "\n\n".join(paragraphs)
    calls: list[int] = []

    def counting(text: str) -> int:
        calls.append(len(text))
        return chars(text)

    settings = ChunkingSettings()
    chunks = chunk_text(doc, counting, settings)
    check_invariants(doc, chunks, settings, chars)
    assert len(calls) <= len(paragraphs) + 25 * len(chunks)
    assert sum(calls) <= 12 * len(doc), "work is linear in the document, not quadratic"

    calls_once = sum(calls)
    calls.clear()
    chunk_text("\n\n".join([doc] * 4), counting, settings)
    assert sum(calls) <= 5 * calls_once


def test_deterministic() -> None:
    settings = ChunkingSettings(max_tokens=24, overlap_tokens=6, min_tokens=4)
    first = chunk_text(DOC * 3, chars, settings)
    second = chunk_text(DOC * 3, chars, settings)
    assert first == second
    assert len(first) > 10


# -- property-style --------------------------------------------------------------------------

VOCAB = [
    "the",
    "a",
    "model",
    "index",
    "chunk",
    "token",
    "retrieval",
    "answer",
    "cité",
    "naïve",
    "façade",
    "über",
    "straße",
    "東京",
    "数据",
    "日本語",
    "Ωμέγα",
    "data",
    "42",
    "3.14",
    "e.g.",
    "U.S.",
    "(note)",
    "[ref]",
    "ok!",
    "why?",
    "yes.",
]


def random_document(rng: random.Random) -> str:
    blocks: list[str] = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.2:
            blocks.append("#" * rng.randint(1, 4) + " " + " ".join(rng.sample(VOCAB, 2)).title())
            continue
        sentences = []
        for _ in range(rng.randint(1, 8)):
            n = rng.choice([1, 3, 8, 15, 40]) if rng.random() < 0.9 else rng.randint(50, 120)
            ws = [rng.choice(VOCAB) for _ in range(rng.randint(1, n))]
            if rng.random() < 0.05:
                ws.insert(rng.randrange(len(ws) + 1), "x" * rng.randint(30, 600))
            sentence = " ".join(ws)
            sentences.append(sentence[:1].upper() + sentence[1:] + rng.choice([".", "!", "?", ""]))
        blocks.append("".join(s + rng.choice([" ", " ", "\n", "  ", "\t"]) for s in sentences))
    seps = ["\n\n", "\n\n\n", "\n \n", "\n\n  "]
    text = "".join(b + rng.choice(seps) for b in blocks)
    return rng.choice(["", " ", "\n"]) + text + rng.choice(["", "  ", "\n"])


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    for _ in range(80):
        doc = random_document(rng)
        max_tokens = rng.choice([16, 20, 32, 64, 128, 200])
        settings = ChunkingSettings(
            max_tokens=max_tokens,
            overlap_tokens=rng.randint(0, max_tokens // 2 - 1),
            min_tokens=rng.randint(0, max_tokens // 3),
            respect_headings=rng.random() < 0.8,
        )
        count = rng.choice([words, chars, superadditive])
        chunks = chunk_text(doc, count, settings)
        check_invariants(doc, chunks, settings, count)
        assert (not chunks) == (not doc.strip())
        checked += len(chunks)
    assert checked > 100
