"""Split a document into token-bounded chunks for a retrieval index.

Chunks are embedded (all-MiniLM-L6-v2 reads at most 256 word-piece tokens) and indexed for
BM25, and citations point at their character offsets, so every :class:`Chunk` is an exact slice
of the document: ``chunk.text == text[chunk.start:chunk.end]``.

How a document is split:

1. Into sections at markdown headings (``#`` to ``######`` then a space, outside fenced code
   blocks), when ``respect_headings``. A section starts with its heading line, and no chunk
   spans two sections.
2. Each section into pieces, recursively and only as far as needed: paragraphs (blank lines);
   a paragraph over ``max_tokens`` into sentences (after ``. ! ?`` followed by whitespace and an
   uppercase letter, digit or quote; after ``。！？``; and at line breaks); a sentence over
   ``max_tokens`` into words; a word over ``max_tokens`` (a long URL, a base64 blob) into
   character runs. Every piece fits ``max_tokens``.
3. Consecutive pieces of a section are packed greedily into the new content of a chunk, up to
   ``max_tokens - overlap_tokens`` (a piece larger than that gets a chunk of its own), so that
   the overlap fits in front of it.
4. Every chunk after the first of a section starts earlier, at the trailing whole sentences of
   the previous chunk (or, when its last sentence is too long, trailing words) that total at
   most ``overlap_tokens`` and keep the chunk within ``max_tokens``.
5. When the new content of a section's last chunk is under ``min_tokens``, it is merged into
   the previous chunk if the result stays within ``max_tokens``.

``count_tokens`` is called on pieces and on candidate chunks (each span at most once), never per
character, and a chunk is only accepted after its real count is checked, so a tokenizer that is
not exactly additive over concatenation is fine.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Chunk", "ChunkingSettings", "chunk_text"]


@dataclass(frozen=True)
class ChunkingSettings:
    """How :func:`chunk_text` splits a document.

    ``max_tokens`` bounds every chunk, in tokens as counted by ``count_tokens``;
    ``overlap_tokens`` of trailing context (whole sentences where possible; 0 for none) are
    repeated at the start of the next chunk of the same section; a section's trailing piece
    under ``min_tokens`` is merged into the previous chunk when that keeps it within
    ``max_tokens``; ``respect_headings`` splits at markdown headings and never packs across one.
    """

    max_tokens: int = 200
    overlap_tokens: int = 32
    min_tokens: int = 24
    respect_headings: bool = True

    def __post_init__(self) -> None:
        for name in ("max_tokens", "overlap_tokens", "min_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(
                f"overlap_tokens must be >= 0 and below max_tokens // 2 "
                f"({self.max_tokens // 2}), got {self.overlap_tokens}"
            )
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ValueError(
                f"min_tokens must be >= 0 and below max_tokens ({self.max_tokens}), "
                f"got {self.min_tokens}"
            )


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: ``text == document[start:end]``."""

    index: int
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    tokens: int


def chunk_text(
    text: str,
    count_tokens: Callable[[str], int],
    settings: ChunkingSettings | None = None,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``settings.max_tokens`` tokens each.

    ``count_tokens`` counts the tokens of a string (the embedder's tokenizer). Whitespace-only
    text gives no chunks. Raises ``ValueError`` if ``count_tokens`` puts a single character
    over ``max_tokens``, as no split could then keep a chunk within the bound.
    """
    return _Chunker(text, count_tokens, settings or ChunkingSettings()).run()


# -- internals ---------------------------------------------------------------------------------

_HEADING = re.compile(r"(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_BLANK_LINE = re.compile(r"\n\s*\n")
_WORD = re.compile(r"\S+")
# A sentence ends after . ! ? (and closing quotes or brackets) before whitespace, or after a
# CJK full stop, exclamation or question mark.
_SENTENCE_END = re.compile(
    r"(?P<latin>[.!?][\"'\u201d\u2019\u00bb)\]]*(?=\s))"
    r"|(?P<cjk>[\u3002\uff01\uff1f][\"'\u201d\u2019\u300d\u300f\uff09)]*)"
)
_OPENING_QUOTES = frozenset("\"'\u201c\u2018\u00ab\u201e\u300c\u300e")

_PARAGRAPH, _SENTENCE, _WORD_LEVEL = 0, 1, 2


class _Piece(NamedTuple):
    start: int
    end: int
    tokens: int


class _Section(NamedTuple):
    start: int
    heading_end: int  # end of the heading line; == start when the section has no heading
    end: int
    path: tuple[str, ...]


class _Draft(NamedTuple):
    start: int  # chunk start, overlap included
    core_start: int  # start of the content that is new in this chunk
    end: int


def _largest_fitting(lo: int, hi: int, guess: int, fits: Callable[[int], bool]) -> int:
    """The largest ``k`` in ``[lo, hi]`` with ``fits(k)``, taking ``lo`` as fitting.

    Assumes ``fits`` is (nearly) monotone; tries ``guess`` first, gallops up from the best
    known fit, then bisects, so it costs O(log) calls. Every value returned above ``lo`` was
    checked.
    """
    if hi <= lo:
        return lo
    guess = min(max(guess, lo), hi)
    good, bad = lo, hi + 1
    if guess > lo:
        if fits(guess):
            good = guess
        else:
            bad = guess
    if bad > hi:
        step = 1
        while good < hi:
            probe = min(good + step, hi)
            if fits(probe):
                good = probe
                step *= 2
            else:
                bad = probe
                break
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


class _Chunker:
    def __init__(
        self, text: str, count_tokens: Callable[[str], int], settings: ChunkingSettings
    ) -> None:
        self.text = text
        self.settings = settings
        self.max_tokens = settings.max_tokens
        self._count_tokens = count_tokens
        self._counts: dict[tuple[int, int], int] = {}

    # -- basics ------------------------------------------------------------------------------

    def count(self, start: int, end: int) -> int:
        """Tokens in ``text[start:end]``; each span is counted once."""
        key = (start, end)
        tokens = self._counts.get(key)
        if tokens is None:
            tokens = self._count_tokens(self.text[start:end])
            self._counts[key] = tokens
        return tokens

    def trim(self, start: int, end: int) -> tuple[int, int] | None:
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return (start, end) if start < end else None

    def _add(self, spans: list[tuple[int, int]], start: int, end: int) -> None:
        span = self.trim(start, end)
        if span is not None:
            spans.append(span)

    # -- structure ---------------------------------------------------------------------------

    def sections(self) -> list[_Section]:
        text = self.text
        if not self.settings.respect_headings:
            return [_Section(0, 0, len(text), ())]
        headings: list[tuple[int, int, int, str]] = []  # start, line end, level, title
        fence: tuple[str, int] | None = None
        pos = 0
        for line in text.split("\n"):
            line_start, pos = pos, pos + len(line) + 1
            bare = line.rstrip()
            fence_match = _FENCE.match(bare)
            if fence is not None:
                if (
                    fence_match is not None
                    and fence_match.group(1)[0] == fence[0]
                    and len(fence_match.group(1)) >= fence[1]
                    and fence_match.end() == len(bare)
                ):
                    fence = None
                continue
            if fence_match is not None:
                fence = (fence_match.group(1)[0], len(fence_match.group(1)))
                continue
            heading = _HEADING.fullmatch(bare)
            if heading is not None:
                level = len(heading.group(1))
                headings.append((line_start, line_start + len(bare), level, heading.group(2)))
        sections: list[_Section] = []
        first = headings[0][0] if headings else len(text)
        if first > 0:
            sections.append(_Section(0, 0, first, ()))
        stack: list[tuple[int, str]] = []
        for n, (start, line_end, level, title) in enumerate(headings):
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            end = headings[n + 1][0] if n + 1 < len(headings) else len(text)
            sections.append(_Section(start, line_end, end, tuple(t for _, t in stack)))
        return sections

    def paragraphs(self, start: int, end: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        pos = start
        for match in _BLANK_LINE.finditer(self.text, start, end):
            self._add(spans, pos, match.start())
            pos = match.end()
        self._add(spans, pos, end)
        return spans

    def sentences(self, start: int, end: int) -> list[tuple[int, int]]:
        text = self.text
        spans: list[tuple[int, int]] = []
        line_start = start
        while line_start < end:
            newline = text.find("\n", line_start, end)
            line_end = end if newline < 0 else newline
            pos = line_start
            for match in _SENTENCE_END.finditer(text, line_start, line_end):
                after = match.end()
                while after < line_end and text[after].isspace():
                    after += 1
                if after >= line_end:
                    continue
                if match.group("latin") is not None and not (
                    text[after].isupper() or text[after].isdigit() or text[after] in _OPENING_QUOTES
                ):
                    continue
                self._add(spans, pos, match.end())
                pos = after
            self._add(spans, pos, line_end)
            line_start = line_end + 1
        return spans

    def words(self, start: int, end: int) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(self.text, start, end)]

    # -- pieces ------------------------------------------------------------------------------

    def pieces(self, section: _Section) -> list[_Piece]:
        out: list[_Piece] = []
        if section.heading_end > section.start:
            self.split(section.start, section.heading_end, _SENTENCE, out)
        for start, end in self.paragraphs(section.heading_end, section.end):
            self.split(start, end, _PARAGRAPH, out)
        return out

    def split(self, start: int, end: int, level: int, out: list[_Piece]) -> None:
        """Append ``text[start:end]`` to ``out``, split as finely as needed to fit."""
        tokens = self.count(start, end)
        if tokens <= self.max_tokens:
            out.append(_Piece(start, end, tokens))
            return
        if level == _PARAGRAPH:
            parts = self.sentences(start, end)
        elif level == _SENTENCE:
            parts = self.words(start, end)
        else:
            self.hard_split(start, end, tokens, out)
            return
        for part_start, part_end in parts:
            self.split(part_start, part_end, level + 1, out)

    def hard_split(self, start: int, end: int, tokens: int, out: list[_Piece]) -> None:
        """Split one long word into runs of characters that each fit ``max_tokens``."""
        chars_per_token = (end - start) / max(tokens, 1)
        guess = max(1, int(self.max_tokens * chars_per_token))
        pos = start
        while pos < end:

            def fits(k: int, pos: int = pos) -> bool:
                return self.count(pos, pos + k) <= self.max_tokens

            size = _largest_fitting(1, end - pos, guess, fits)
            run_tokens = self.count(pos, pos + size)
            if run_tokens > self.max_tokens:
                raise ValueError(
                    f"count_tokens gives {run_tokens} tokens for the single character "
                    f"{self.text[pos]!r}, over max_tokens={self.max_tokens}"
                )
            out.append(_Piece(pos, pos + size, run_tokens))
            pos += size

    # -- packing -----------------------------------------------------------------------------

    def pack_end(self, pieces: Sequence[_Piece], prefix: list[int], first: int) -> int:
        """Index of the last piece of the chunk content that starts at piece ``first``."""
        budget = self.max_tokens - self.settings.overlap_tokens
        start = pieces[first].start
        guess = bisect.bisect_right(prefix, prefix[first] + budget) - 2

        def fits(last: int) -> bool:
            return self.count(start, pieces[last].end) <= budget

        return _largest_fitting(first, len(pieces) - 1, guess, fits)

    def overlap_start(self, prev: _Draft, core_start: int, end: int, starts: list[int]) -> int:
        """Where a chunk whose new content is ``text[core_start:end]`` starts, overlap included."""
        limit = self.settings.overlap_tokens
        if limit == 0:
            return core_start
        prev_end = prev.end

        def best(candidates: list[int]) -> int | None:
            def fits(k: int) -> bool:
                at = candidates[k - 1]
                return self.count(at, prev_end) <= limit and self.count(at, end) <= self.max_tokens

            k = _largest_fitting(0, len(candidates), 1, fits)
            return candidates[k - 1] if k else None

        # Trailing whole sentences, nearest first; never the previous chunk's own start.
        lo = bisect.bisect_right(starts, prev.start)
        hi = bisect.bisect_left(starts, core_start)
        found = best(starts[lo:hi][::-1])
        if found is not None:
            return found
        # The last sentence is too long: trailing words of it.
        floor = max(prev.start, starts[hi - 1] if hi > 0 else prev.start)
        words = [m.start() for m in _WORD.finditer(self.text, floor, prev_end) if m.start() > floor]
        found = best(words[::-1])
        return core_start if found is None else found

    def sentence_starts(self, section: _Section) -> list[int]:
        starts = [section.start] if section.heading_end > section.start else []
        for start, end in self.paragraphs(section.heading_end, section.end):
            starts.extend(s for s, _ in self.sentences(start, end))
        return starts

    def section_chunks(self, section: _Section) -> list[_Draft]:
        pieces = self.pieces(section)
        if not pieces:
            return []
        prefix = [0]
        for piece in pieces:
            prefix.append(prefix[-1] + piece.tokens)
        drafts: list[_Draft] = []
        starts: list[int] | None = None
        first = 0
        while first < len(pieces):
            last = self.pack_end(pieces, prefix, first)
            core_start, end = pieces[first].start, pieces[last].end
            start = core_start
            if drafts and self.settings.overlap_tokens:
                if starts is None:
                    starts = self.sentence_starts(section)
                start = self.overlap_start(drafts[-1], core_start, end, starts)
            drafts.append(_Draft(start, core_start, end))
            first = last + 1
        if len(drafts) >= 2:
            prev, tail = drafts[-2], drafts[-1]
            if (
                self.count(tail.core_start, tail.end) < self.settings.min_tokens
                and self.count(prev.start, tail.end) <= self.max_tokens
            ):
                drafts[-2:] = [_Draft(prev.start, prev.core_start, tail.end)]
        return drafts

    def run(self) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in self.sections():
            for draft in self.section_chunks(section):
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        text=self.text[draft.start : draft.end],
                        start=draft.start,
                        end=draft.end,
                        heading_path=section.path,
                        tokens=self.count(draft.start, draft.end),
                    )
                )
        return chunks
