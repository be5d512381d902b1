"""Load documents for a knowledge base (RAG) from files and folders.

Two entry points:

* :func:`load_file` loads one file and raises :class:`LoadError` when it cannot be
  loaded (corrupt, empty, binary, unreadable, too large, unsupported type);
* :func:`load_path` loads a file or a whole folder. In a folder, a file that cannot
  be loaded becomes a :class:`LoadProblem` and the others still load, so one bad
  file never stops a batch.

Supported types (:data:`SUPPORTED`, suffixes compared case-insensitively):

* ``.txt``, ``.md``, ``.markdown``: UTF-8 text (a BOM is fine; UTF-16 with a BOM is
  read too), kept as is except that line ends become ``\\n``. A markdown file's
  title is its first ``# heading`` (outside code blocks and front matter).
* ``.html``, ``.htm``: the visible text. Scripts, styles, navigation, headers,
  footers, asides, forms, SVG, iframes and comments are dropped; block elements
  start new lines or paragraphs; ``h1``–``h6`` become markdown headings
  (``#`` … ``######``) on their own paragraph so that a splitter can see them; list
  items start with ``- `` and table cells are joined with `` | ``. The title is
  the page's ``<title>``.
* ``.pdf`` (pypdf): the text of every page, pages joined with a blank line;
  ``metadata["pages"]`` is the page count and ``metadata["page_starts"]`` the
  offset in ``text`` where each page begins. The title is the PDF's metadata title.
* ``.json``: an object is one document, an array of objects one document per item
  (``source`` ``"path#N"``, N counted from 1). The text is the object's
  ``json_field``; its other scalar fields go to ``metadata``.
* ``.jsonl``: one document per non-blank line (``"path#N"``, N the 1-based line
  number in the file). The first bad line is reported and the whole file is
  skipped, so that nothing half-loaded gets in.
* ``.csv``: a header row is required; each data row is one document
  (``"path#N"``, N the 1-based data row, the header not counted, blank lines
  skipped) whose text is one ``column: value`` line per chosen column with a
  value; the other columns go to ``metadata``.

Records (JSON items, JSONL lines, CSV rows) whose text is empty or ``null`` are
skipped; a file where every record is empty is a problem. Every document's
``metadata["type"]`` is one of ``txt md html pdf json jsonl csv`` and wins over a
record field of the same name.

Folders are walked recursively in sorted order; hidden files and folders (names
starting with ``.``) are skipped. ``LoadOptions.include`` and ``exclude`` are
fnmatch globs on the posix path relative to the folder (``*`` also crosses
``/``); ``**/`` also matches at the top level, ``/**/`` also matches no folder,
and a pattern that matches a folder (``drafts``) matches everything under it.
When a single file is given, include and exclude do not apply.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from outcrop.errors import UserError

__all__ = [
    "SUPPORTED",
    "LoadError",
    "LoadOptions",
    "LoadProblem",
    "LoadedDocument",
    "load_file",
    "load_path",
]

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".json", ".jsonl", ".csv")

_TYPES: dict[str, str] = {
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".json": "json",
    ".jsonl": "jsonl",
    ".csv": "csv",
}
_SNIFF_BYTES = 8 * 1024
_KB = 1024
_MB = 1024 * 1024
_SUPPORTED_TEXT = ", ".join(SUPPORTED)


@dataclass
class LoadOptions:
    """How files are chosen and read."""

    include: list[str] = field(default_factory=list)
    """Glob patterns relative to the root folder, e.g. ``["**/*.md"]``; empty: every
    supported file."""
    exclude: list[str] = field(default_factory=list)
    """Glob patterns to skip, e.g. ``["drafts/**"]``."""
    max_bytes: int = 20 * _MB
    """Files larger than this are refused without being read."""
    json_field: str = "text"
    """The field of a JSON object or JSONL line that holds the text."""
    csv_columns: list[str] | None = None
    """The CSV columns that form the text; ``None``: all of them."""


@dataclass
class LoadedDocument:
    """One document ready to be split and indexed."""

    source: str
    """Stable id: the posix path relative to the folder that was added (the file
    name for a single file); ``"path#N"`` for a JSON item, JSONL line or CSV row."""
    path: Path
    """The file it comes from."""
    text: str
    """The extracted text; never empty."""
    title: str | None
    """HTML ``<title>``, markdown first ``# heading``, PDF metadata title, else None."""
    metadata: dict[str, Any]
    """At least ``{"type": ...}``; see the module documentation."""


@dataclass
class LoadProblem:
    """A file of a folder that could not be loaded, and why."""

    path: Path
    reason: str


class LoadError(UserError):
    """A load that cannot go on: a missing path, patterns that match nothing,
    options out of bounds, or (for a single file) a file that cannot be loaded.

    ``path`` is the file or folder concerned and ``reason`` the problem without
    the path, where there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None, reason: str | None = None):
        self.path = path
        self.reason = reason
        super().__init__(message)


class _Problem(Exception):
    """Internal: this file cannot be loaded, for ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------- entry points


def load_file(
    path: Path, options: LoadOptions | None = None, *, root: Path | None = None
) -> list[LoadedDocument]:
    """Load one file.

    ``source`` is the path relative to ``root`` when given, else the file name.
    Raises :class:`LoadError`, naming the file and the reason, when the file cannot
    be loaded.
    """
    opts = _check_options(options)
    path = Path(path)
    source = _source_for(path, root)
    try:
        return _load_one(path, opts, source)
    except _Problem as problem:
        raise LoadError(
            f"Cannot load {path}: {problem.reason}", path=path, reason=problem.reason
        ) from None


def load_path(
    path: Path, options: LoadOptions | None = None
) -> tuple[list[LoadedDocument], list[LoadProblem]]:
    """Load a file or every supported file of a folder (recursively, sorted).

    Returns the documents and the files of the folder that could not be loaded.
    Raises :class:`LoadError` when the path does not exist, when no supported file
    of the folder is selected by include/exclude, or when a single file given
    directly cannot be loaded.
    """
    opts = _check_options(options)
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path} does not exist; check the path", path=path)
    if not path.is_dir():
        return load_file(path, opts, root=path.parent), []

    problems: list[LoadProblem] = []
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        reason = f"the folder cannot be read: {_os_reason(exc)}; check its permissions"
        raise LoadError(f"Cannot load {path}: {reason}", path=path, reason=reason) from None

    selected = [
        (rel, file)
        for rel, file in _walk(path, problems)
        if (not opts.include or _matches(rel, opts.include))
        and not _matches(rel, opts.exclude)
        and file.suffix.lower() in _TYPES
    ]
    if not selected:
        if opts.include or opts.exclude:
            chosen = []
            if opts.include:
                chosen.append(f"include {opts.include!r}")
            if opts.exclude:
                chosen.append(f"exclude {opts.exclude!r}")
            message = (
                f"no file under {path} matches {' and '.join(chosen)}; "
                f"supported types: {_SUPPORTED_TEXT}. Patterns are relative to {path}, "
                "e.g. '**/*.md'; check them"
            )
        else:
            message = (
                f"no supported file under {path}; supported types: {_SUPPORTED_TEXT}. "
                "Hidden files and folders are skipped"
            )
        raise LoadError(message, path=path)

    documents: list[LoadedDocument] = []
    for rel, file in selected:
        try:
            documents.extend(_load_one(file, opts, rel))
        except _Problem as problem:
            problems.append(LoadProblem(file, problem.reason))
    return documents, problems


# --------------------------------------------------------------------------- options & files


def _check_options(options: LoadOptions | None) -> LoadOptions:
    if options is None:
        return LoadOptions()
    for name in ("include", "exclude"):
        value = getattr(options, name)
        if isinstance(value, str) or not all(isinstance(item, str) for item in value):
            raise LoadError(
                f"LoadOptions.{name} must be a list of glob patterns, e.g. ['**/*.md'], "
                f"not {value!r}"
            )
    columns = options.csv_columns
    if columns is not None:
        if isinstance(columns, str) or not all(isinstance(item, str) for item in columns):
            raise LoadError(
                f"LoadOptions.csv_columns must be a list of column names, not {columns!r}"
            )
        if not columns:
            raise LoadError(
                "LoadOptions.csv_columns is empty; name at least one column, "
                "or use None for all of them"
            )
    max_bytes = options.max_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise LoadError(
            f"LoadOptions.max_bytes must be a positive number of bytes, not {max_bytes!r}"
        )
    if not isinstance(options.json_field, str) or not options.json_field:
        raise LoadError(
            f"LoadOptions.json_field must name a field, e.g. 'text', not {options.json_field!r}"
        )
    return options


def _source_for(path: Path, root: Path | None) -> str:
    if root is None:
        return path.name
    root = Path(root)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise LoadError(
            f"{path} is not inside {root}; pass the folder that holds it as root",
            path=path,
        ) from None


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _size(n: int) -> str:
    if n >= _MB:
        return f"{n / _MB:.1f}".removesuffix(".0") + " MB"
    if n >= _KB:
        return f"{n / _KB:.1f}".removesuffix(".0") + " KB"
    return f"{n} bytes"


def _too_large(size: int, limit: int) -> str:
    shown = _size(size)
    if shown == _size(limit):
        shown = f"{size:,} bytes"
    return f"larger than the {_size(limit)} limit ({shown}); raise max_bytes or split it"


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _Problem(_too_large(size, max_bytes))
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise _Problem(f"cannot be read: {_os_reason(exc)}; check its permissions") from None
    if len(data) > max_bytes:
        raise _Problem(_too_large(max(size, len(data)), max_bytes))
    return data


def _load_one(path: Path, opts: LoadOptions, source: str) -> list[LoadedDocument]:
    if not path.exists():
        raise _Problem("does not exist; check the path")
    if path.is_dir():
        raise _Problem("is a folder, not a file; use load_path to load a folder")
    if not path.is_file():
        raise _Problem("is not a regular file")
    kind = _TYPES.get(path.suffix.lower())
    if kind is None:
        what = f"'{path.suffix}'" if path.suffix else "(no suffix)"
        raise _Problem(f"unsupported file type {what}; supported types: {_SUPPORTED_TEXT}")
    data = _read(path, opts.max_bytes)
    if not data.strip():
        raise _Problem("empty file")
    if kind == "pdf":
        return [_load_pdf(path, data, source)]
    if kind == "html":
        return [_load_html(path, data, source)]
    text = _decode(data)
    if not text.strip():
        raise _Problem("empty file")
    if kind == "json":
        return _load_json(path, text, source, opts)
    if kind == "jsonl":
        return _load_jsonl(path, text, source, opts)
    if kind == "csv":
        return _load_csv(path, text, source, opts)
    title = _markdown_title(text) if kind == "md" else None
    return [LoadedDocument(source, path, text, title, {"type": kind})]


# --------------------------------------------------------------------------- text decoding

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)


def _decode(data: bytes, *, html: bool = False) -> str:
    """UTF-8 (with or without a BOM) or UTF-16 with a BOM; \\r\\n becomes \\n."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return _normalise(data.decode("utf-16"))
        except UnicodeDecodeError:
            raise _Problem("not valid UTF-16 text despite its byte-order mark") from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _Problem("not valid UTF-8 text (binary file?)")
    try:
        return _normalise(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        if html:
            declared = _META_CHARSET.search(data[:4096])
            if declared is not None:
                charset = declared.group(1).decode("ascii")
                try:
                    return _normalise(data.decode(charset))
                except (LookupError, UnicodeDecodeError):
                    pass
        bad = data[exc.start : exc.start + 1].hex()
        raise _Problem(
            f"not valid UTF-8 text (binary file?): byte 0x{bad} at offset {exc.start}; "
            "save it as UTF-8"
        ) from None


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------- markdown

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


def _closes(fence: str, line: str) -> bool:
    """Whether ``line`` closes a code block opened with ``fence``."""
    stripped = line.strip()
    indent = len(line) - len(line.lstrip(" "))
    return indent <= 3 and len(stripped) >= len(fence) and not stripped.strip(fence[0])


def _markdown_title(text: str) -> str | None:
    lines = text.split("\n")
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                start = i + 1
                break
    fence: str | None = None
    for line in lines[start:]:
        opened = _FENCE.match(line)
        if fence is not None:
            if _closes(fence, line):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        heading = _ATX_H1.match(line)
        if heading and heading.group(1).strip():
            return heading.group(1).strip()
    return None


# --------------------------------------------------------------------------- HTML

_SKIP_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "header",
        "footer",
        "aside",
        "form",
        "svg",
        "iframe",
    }
)
_PARAGRAPH_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "center",
        "details",
        "div",
        "dl",
        "fieldset",
        "figcaption",
        "figure",
        "hgroup",
        "hr",
        "main",
        "menu",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "ul",
    }
)
_LINE_TAGS = frozenset({"br", "dd", "dt", "li", "option", "tr"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_SPACES = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Collects the visible text of a page as markdown-ish paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip: list[str] = []
        self._pre = 0
        self._heading = 0
        self._prefix = ""
        self._cells = 0
        self._started = False
        self._in_title = False
        self._title: list[str] = []
        self._title_done = False

    # -- output helpers

    def _last(self) -> str:
        return self._out[-1][-1] if self._out else "\n"

    def _trailing_newlines(self) -> int:
        count = 0
        for piece in reversed(self._out):
            kept = piece.rstrip(" \n")
            count += piece[len(kept) :].count("\n")
            if kept:
                break
        return count

    def _break(self, newlines: int) -> None:
        if self._heading:  # a heading stays on one line
            self._write(" ")
            return
        if not self._started:
            return
        missing = newlines - self._trailing_newlines()
        if missing > 0:
            self._out.append("\n" * missing)

    def _write(self, text: str) -> None:
        if not self._pre:
            text = _SPACES.sub(" ", text)
            if self._last() in " \n":
                text = text.lstrip(" ")
        if not text:
            return
        if text.strip():
            self._started = True
            if self._prefix:
                text = self._prefix + text
                self._prefix = ""
        self._out.append(text)

    # -- parser callbacks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip.append(tag)
            return
        if self._skip:
            return
        if tag == "title":
            self._in_title = True
            return
        level = _HEADINGS.get(tag)
        if level is not None:
            self._heading = 0
            self._break(2)
            self._heading = level
            self._prefix = "#" * level + " "
        elif tag == "li":
            self._break(1)
            self._prefix = "- "
        elif tag == "tr":
            self._break(1)
            self._cells = 0
        elif tag in ("td", "th"):
            if self._cells:
                self._write(" | ")
            self._cells += 1
        elif tag == "pre":
            self._break(2)
            self._pre += 1
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                while self._skip.pop() != tag:
                    pass
            return
        if tag == "title":
            if self._in_title:
                self._title_done = True
            self._in_title = False
        elif tag in _HEADINGS:
            if self._heading:
                self._heading = 0
                self._prefix = ""
                self._break(2)
        elif tag in ("li", "ul", "ol"):
            self._prefix = ""
            self._break(2 if tag != "li" else 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._break(2)
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            if not self._title_done:
                self._title.append(data)
            return
        self._write(data)

    # -- results

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self._out).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")

    def title(self) -> str | None:
        return _SPACES.sub(" ", "".join(self._title)).strip() or None


def _load_html(path: Path, data: bytes, source: str) -> LoadedDocument:
    markup = _decode(data, html=True)
    if not markup.strip():
        raise _Problem("empty file")
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError) as exc:  # the standard parser rarely gives up
        raise _Problem(f"the HTML cannot be parsed: {_brief(exc)}") from None
    text = parser.text()
    if not text.strip():
        raise _Problem("no visible text in the HTML page (only scripts, navigation or markup?)")
    return LoadedDocument(source, path, text, parser.title(), {"type": "html"})


# --------------------------------------------------------------------------- PDF


def _brief(exc: BaseException) -> str:
    detail = (str(exc).strip().splitlines() or [""])[0]
    if len(detail) > 200:
        detail = detail[:197] + "..."
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


def _load_pdf(path: Path, data: bytes, source: str) -> LoadedDocument:
    try:
        from pypdf import PasswordType, PdfReader
    except ImportError:  # pragma: no cover - a core dependency
        raise _Problem("reading PDF files needs the pypdf package: pip install pypdf") from None

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise _Problem(
                "the PDF is encrypted with a password; save a copy without the password "
                "(e.g. qpdf --decrypt) and load that"
            )
        pages = [_normalise(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        raw_title = info.title if info is not None else None
    except _Problem:
        raise
    except Exception as exc:  # pypdf raises many kinds of exceptions on bad files
        raise _Problem(f"the PDF cannot be parsed: {_brief(exc)}") from None

    if not pages:
        raise _Problem("the PDF has no pages")
    if not any(pages):
        raise _Problem("no extractable text (scanned images?); run OCR on it first")
    page_starts: list[int] = []
    offset = 0
    for page_text in pages:
        page_starts.append(offset)
        offset += len(page_text) + 2
    title = raw_title.strip() if isinstance(raw_title, str) and raw_title.strip() else None
    metadata: dict[str, Any] = {"type": "pdf", "pages": len(pages), "page_starts": page_starts}
    return LoadedDocument(source, path, "\n\n".join(pages), title, metadata)


# --------------------------------------------------------------------------- JSON, JSONL


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fields_hint(record: dict[str, Any]) -> str:
    names = list(record)
    if not names:
        return " (it has no fields)"
    shown = ", ".join(repr(name) for name in names[:10])
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f" (its fields: {shown}{more})"


def _record(
    path: Path, record: object, source: str, kind: str, where: str, opts: LoadOptions
) -> LoadedDocument | None:
    """One JSON object to a document; None when its text is empty or null."""
    name = opts.json_field
    if not isinstance(record, dict):
        raise _Problem(f"{where} is a JSON {_kind_of(record)}, not an object")
    if name not in record:
        raise _Problem(
            f"no {name!r} field in {where}{_fields_hint(record)}; choose the field with json_field"
        )
    value = record[name]
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Problem(
            f"the {name!r} field in {where} is a {_kind_of(value)}, not a string; "
            "choose a text field with json_field"
        )
    if not value.strip():
        return None
    metadata: dict[str, Any] = {
        key: item
        for key, item in record.items()
        if key != name and isinstance(item, (str, int, float, bool))
    }
    metadata["type"] = kind
    return LoadedDocument(source, path, _normalise(value), None, metadata)


def _load_json(path: Path, text: str, source: str, opts: LoadOptions) -> list[LoadedDocument]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Problem(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    documents: list[LoadedDocument] = []
    if isinstance(data, dict):
        document = _record(path, data, source, "json", "the JSON object", opts)
        if document is not None:
            documents.append(document)
    elif isinstance(data, list):
        if not data:
            raise _Problem("empty JSON array")
        for number, item in enumerate(data, start=1):
            document = _record(path, item, f"{source}#{number}", "json", f"item {number}", opts)
            if document is not None:
                documents.append(document)
    else:
        raise _Problem(
            f"the JSON file holds a {_kind_of(data)}, not an object or an array of objects"
        )
    if not documents:
        raise _Problem(f"no text: the {opts.json_field!r} field is empty everywhere")
    return documents


def _load_jsonl(path: Path, text: str, source: str, opts: LoadOptions) -> list[LoadedDocument]:
    documents: list[LoadedDocument] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Problem(
                f"line {number} is not valid JSON: {exc.msg} (column {exc.colno}); "
                "fix or remove that line"
            ) from None
        document = _record(path, record, f"{source}#{number}", "jsonl", f"line {number}", opts)
        if document is not None:
            documents.append(document)
    if not documents:
        raise _Problem(f"no text: the {opts.json_field!r} field is empty on every line")
    return documents


# --------------------------------------------------------------------------- CSV


def _load_csv(path: Path, text: str, source: str, opts: LoadOptions) -> list[LoadedDocument]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise _Problem(f"not valid CSV near line {reader.line_num}: {exc}") from None
    if not rows:
        raise _Problem("empty file")
    header = [cell.strip() for cell in rows[0]]
    data_rows = rows[1:]
    if not data_rows:
        raise _Problem("no data rows under the header row (a header row is required)")

    def column_name(index: int) -> str:
        if index < len(header) and header[index]:
            return header[index]
        return f"column {index + 1}"

    if opts.csv_columns is None:
        chosen: list[int] | None = None
    else:
        unknown = [name for name in opts.csv_columns if name not in header]
        if unknown:
            listed = ", ".join(repr(name) for name in header)
            raise _Problem(
                f"unknown CSV column{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(name) for name in unknown)}; the header has: {listed}; "
                "choose from these with csv_columns"
            )
        chosen = list(dict.fromkeys(header.index(name) for name in opts.csv_columns))

    documents: list[LoadedDocument] = []
    for number, row in enumerate(data_rows, start=1):
        indexes = chosen if chosen is not None else list(range(len(row)))
        lines = [
            f"{column_name(index)}: {row[index].strip()}"
            for index in indexes
            if index < len(row) and row[index].strip()
        ]
        if not lines:
            continue
        metadata: dict[str, Any] = {}
        if chosen is not None:
            for index, value in enumerate(row):
                if index not in chosen and value.strip():
                    metadata[column_name(index)] = value.strip()
        metadata["type"] = "csv"
        text_value = _normalise("\n".join(lines))
        documents.append(LoadedDocument(f"{source}#{number}", path, text_value, None, metadata))
    if not documents:
        raise _Problem("no text: the chosen columns are empty in every row")
    return documents


# --------------------------------------------------------------------------- folders


def _walk(root: Path, problems: list[LoadProblem]) -> list[tuple[str, Path]]:
    """Every non-hidden file under ``root`` as (posix relative path, path), sorted."""

    def on_error(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        problems.append(
            LoadProblem(
                where, f"the folder cannot be read: {_os_reason(exc)}; check its permissions"
            )
        )

    found: list[tuple[str, Path]] = []
    for folder, subfolders, files in os.walk(root, onerror=on_error):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        base = Path(folder)
        for name in files:
            if not name.startswith("."):
                file = base / name
                found.append((file.relative_to(root).as_posix(), file))
    found.sort()
    return found


def _pattern_variants(pattern: str) -> list[str]:
    pattern = pattern.strip().replace("\\", "/")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    pattern = pattern.strip("/")
    variants = [pattern]
    while pattern.startswith("**/"):
        pattern = pattern[3:]
        variants.append(pattern)
    variants.extend([v.replace("/**/", "/") for v in variants if "/**/" in v])
    return variants


def _matches(rel: str, patterns: list[str]) -> bool:
    """Whether ``rel`` or one of its folders matches one of the glob patterns."""
    parts = rel.split("/")
    candidates = [rel] + ["/".join(parts[:i]) for i in range(1, len(parts))]
    for pattern in patterns:
        for variant in _pattern_variants(pattern):
            if variant and any(fnmatchcase(candidate, variant) for candidate in candidates):
                return True
    return False
