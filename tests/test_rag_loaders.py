"""Tests for outcrop.rag.loaders: every file type, good and bad, and folder loading."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from outcrop.errors import UserError
from outcrop.rag.loaders import (
    SUPPORTED,
    LoadedDocument,
    LoadError,
    LoadOptions,
    LoadProblem,
    load_file,
    load_path,
)

# --------------------------------------------------------------------------- helpers


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A small valid PDF with one line of Helvetica text per page (no parentheses)."""
    count = len(pages)
    page_ids = [4 + 2 * i for i in range(count)]
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for pid, text in zip(page_ids, pages, strict=True):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects[pid] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (pid + 1)
        )
        objects[pid + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    info = ""
    if title is not None:
        info_id = 4 + 2 * count
        objects[info_id] = f"<< /Title ({title}) >>".encode()
        info = f" /Info {info_id} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets: dict[int, int] = {}
    for oid in sorted(objects):
        offsets[oid] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (oid, objects[oid])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for oid in range(1, size):
        out += b"%010d 00000 n \n" % offsets[oid]
    out += f"trailer\n<< /Size {size} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def one(path: Path, options: LoadOptions | None = None) -> LoadedDocument:
    documents = load_file(path, options)
    assert len(documents) == 1
    return documents[0]


def reason_for(path: Path, options: LoadOptions | None = None) -> str:
    with pytest.raises(LoadError) as caught:
        load_file(path, options)
    assert str(path) in str(caught.value)
    assert caught.value.path == path
    assert caught.value.reason is not None
    assert caught.value.reason in str(caught.value)
    return caught.value.reason


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- txt


def test_txt_good_keeps_text_normalises_line_ends_and_drops_bom(kb: Path) -> None:
    path = write(kb / "notes.txt", b"\xef\xbb\xbfFirst line\r\n  second line\r\n")
    doc = one(path)
    assert doc.text == "First line\n  second line\n"
    assert doc.source == "notes.txt"
    assert doc.path == path
    assert doc.title is None
    assert doc.metadata == {"type": "txt"}


def test_txt_utf16_with_bom_is_read(kb: Path) -> None:
    path = write(kb / "wide.txt", "héllo wörld".encode("utf-16"))
    assert one(path).text == "héllo wörld"


def test_txt_binary_is_refused(kb: Path) -> None:
    path = write(kb / "blob.txt", b"abc\x00\x01\x02def" * 10)
    assert reason_for(path) == "not valid UTF-8 text (binary file?)"


def test_txt_invalid_utf8_names_the_byte_and_the_fix(kb: Path) -> None:
    path = write(kb / "latin1.txt", "café".encode("latin-1"))
    reason = reason_for(path)
    assert reason.startswith("not valid UTF-8 text (binary file?)")
    assert "0xe9" in reason
    assert "save it as UTF-8" in reason


@pytest.mark.parametrize("content", [b"", b"  \n\t\r\n  ", b"\xef\xbb\xbf \n"])
def test_txt_empty_or_whitespace_only_is_empty_file(kb: Path, content: bytes) -> None:
    path = write(kb / "empty.txt", content)
    assert reason_for(path) == "empty file"


# --------------------------------------------------------------------------- markdown


def test_md_first_heading_becomes_title(kb: Path) -> None:
    text = (
        "---\n# yaml comment\ntitle: front\n---\n"
        "Intro text.\n\n```bash\n# not a heading\n```\n\n## Sub\n\n# The Real Title #\n\nBody\n"
    )
    doc = one(write(kb / "guide.md", text))
    assert doc.title == "The Real Title"
    assert doc.text == text
    assert doc.metadata == {"type": "md"}


def test_md_without_level_one_heading_has_no_title(kb: Path) -> None:
    doc = one(write(kb / "plain.markdown", "## Only a subheading\n\n#hashtag is not a heading\n"))
    assert doc.title is None
    assert doc.metadata["type"] == "md"


def test_md_binary_is_refused(kb: Path) -> None:
    assert "binary" in reason_for(write(kb / "bad.md", b"# T\x00\xff\xfe"))


# --------------------------------------------------------------------------- HTML

PAGE = """<!DOCTYPE html>
<html><head><title> Fish &amp;  Chips </title>
<style>body { color: red }</style>
<script>var hidden = "<p>script text</p>";</script>
</head>
<body>
<header>Site banner</header>
<nav><ul><li><a href="/">Home menu</a></li></ul></nav>
<!-- a secret comment -->
<noscript>Enable JavaScript</noscript>
<main>
  <h1>Fish &amp; Chips</h1>
  <p>Served   with&nbsp;salt &lt;and&gt; vinegar, <b>hot</b>
     and crisp.</p>
  <h3>
     History
  </h3>
  <ul><li>Invented 1860</li><li>Wrapped in paper</li></ul>
  <table><tr><th>Size</th><th>Price</th></tr><tr><td>Large</td><td>&euro;9</td></tr></table>
  <form><input name="q"><button>Search button</button></form>
  <svg><text>svg label</text></svg>
</main>
<aside>Related links</aside>
<footer>Copyright footer</footer>
</body></html>
"""


def test_html_extracts_visible_text_with_markdown_headings(kb: Path) -> None:
    doc = one(write(kb / "page.html", PAGE))
    assert doc.title == "Fish & Chips"
    assert doc.metadata == {"type": "html"}
    assert doc.text == (
        "# Fish & Chips\n\n"
        "Served with salt <and> vinegar, hot and crisp.\n\n"
        "### History\n\n"
        "- Invented 1860\n- Wrapped in paper\n\n"
        "Size | Price\nLarge | €9"
    )
    for dropped in (
        "script text",
        "color",
        "Site banner",
        "Home menu",
        "secret comment",
        "Enable JavaScript",
        "Search button",
        "svg label",
        "Related links",
        "Copyright footer",
    ):
        assert dropped not in doc.text


def test_html_blocks_and_breaks_start_new_lines(kb: Path) -> None:
    doc = one(write(kb / "b.htm", "<div>one<br>two</div><p>three</p><pre>  keep\n    this</pre>"))
    assert doc.text == "one\ntwo\n\nthree\n\n  keep\n    this"
    assert doc.title is None


def test_html_declared_legacy_charset_is_honoured(kb: Path) -> None:
    markup = '<html><head><meta charset="iso-8859-1"></head><body><p>café</p></body></html>'
    doc = one(write(kb / "old.html", markup.encode("latin-1")))
    assert doc.text == "café"


def test_html_without_visible_text_is_a_problem(kb: Path) -> None:
    path = write(
        kb / "shell.html", "<html><head><title>App</title></head><body><script>x()</script>"
    )
    assert reason_for(path).startswith("no visible text")


def test_html_binary_is_refused(kb: Path) -> None:
    assert "binary" in reason_for(write(kb / "x.html", b"\x89PNG\r\n\x1a\n\x00\x00"))


# --------------------------------------------------------------------------- PDF


def test_pdf_two_pages_text_and_page_starts(kb: Path) -> None:
    path = write(kb / "report.pdf", make_pdf(["Hello first page", "Second page here"], "Annual"))
    doc = one(path)
    assert doc.metadata["type"] == "pdf"
    assert doc.metadata["pages"] == 2
    starts = doc.metadata["page_starts"]
    assert starts[0] == 0
    assert "Hello first page" in doc.text[: starts[1]]
    assert doc.text[starts[1] :].startswith("Second page here")
    assert doc.text[starts[1] - 2 : starts[1]] == "\n\n"
    assert doc.title == "Annual"
    assert doc.source == "report.pdf"


def test_pdf_without_metadata_title_has_no_title(kb: Path) -> None:
    doc = one(write(kb / "untitled.pdf", make_pdf(["Only page"])))
    assert doc.title is None
    assert doc.metadata["page_starts"] == [0]
    assert doc.text == "Only page"


def test_pdf_corrupt_is_a_problem(kb: Path) -> None:
    garbage = b"%PDF-1.7\n" + bytes((i * 37 + 11) % 256 for i in range(2000))
    reason = reason_for(write(kb / "broken.pdf", garbage))
    assert reason.startswith("the PDF cannot be parsed: ")
    assert len(reason) < 300


def test_pdf_without_text_is_a_problem(kb: Path) -> None:
    reason = reason_for(write(kb / "scan.pdf", make_pdf(["", ""])))
    assert reason.startswith("no extractable text (scanned images?)")


def test_pdf_encrypted_with_password_is_a_problem(kb: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    reason = reason_for(write(kb / "locked.pdf", buffer.getvalue()))
    assert "encrypted" in reason
    assert "password" in reason


# --------------------------------------------------------------------------- JSON


def test_json_object_is_one_document_with_scalar_metadata(kb: Path) -> None:
    record = {"text": "The body", "author": "Ann", "year": 2024, "score": 0.5, "draft": False}
    record |= {"tags": ["a"], "nested": {"x": 1}, "missing": None}
    doc = one(write(kb / "doc.json", json.dumps(record)))
    assert doc.text == "The body"
    assert doc.source == "doc.json"
    assert doc.metadata == {
        "type": "json",
        "author": "Ann",
        "year": 2024,
        "score": 0.5,
        "draft": False,
    }


def test_json_array_is_one_document_per_item_with_json_field(kb: Path) -> None:
    items = [{"body": "one", "id": 1}, {"body": "", "id": 2}, {"body": "three", "id": 3}]
    path = write(kb / "items.json", json.dumps(items))
    documents = load_file(path, LoadOptions(json_field="body"))
    assert [(d.source, d.text, d.metadata["id"]) for d in documents] == [
        ("items.json#1", "one", 1),
        ("items.json#3", "three", 3),
    ]


def test_json_missing_field_names_the_item_and_the_option(kb: Path) -> None:
    path = write(kb / "items.json", json.dumps([{"text": "ok"}, {"content": "no"}]))
    reason = reason_for(path)
    assert reason.startswith("no 'text' field in item 2")
    assert "'content'" in reason
    assert "json_field" in reason


def test_json_object_missing_field(kb: Path) -> None:
    reason = reason_for(write(kb / "one.json", '{"body": "x"}'))
    assert reason.startswith("no 'text' field in the JSON object")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "x",', "not valid JSON"),
        ("42", "not an object or an array of objects"),
        ("[]", "empty JSON array"),
        ('["plain string"]', "item 1 is a JSON string, not an object"),
        ('{"text": 5}', "is a number, not a string"),
    ],
)
def test_json_bad_files_are_problems(kb: Path, content: str, expected: str) -> None:
    assert expected in reason_for(write(kb / "bad.json", content))


# --------------------------------------------------------------------------- JSONL


def test_jsonl_good_one_document_per_line_numbered_by_line(kb: Path) -> None:
    lines = '{"text": "alpha", "lang": "en"}\n\n{"text": "beta", "meta": {"x": 1}}\r\n'
    documents = load_file(write(kb / "data.jsonl", lines))
    assert [(d.source, d.text) for d in documents] == [
        ("data.jsonl#1", "alpha"),
        ("data.jsonl#3", "beta"),
    ]
    assert documents[0].metadata == {"type": "jsonl", "lang": "en"}
    assert documents[1].metadata == {"type": "jsonl"}


def test_jsonl_malformed_line_is_reported_by_number(kb: Path) -> None:
    lines = '{"text": "ok"}\n{"text": "ok too"}\n{"text": broken}\n{"text": "after"}\n'
    reason = reason_for(write(kb / "data.jsonl", lines))
    assert reason.startswith("line 3 is not valid JSON")


def test_jsonl_missing_field_is_reported_by_number(kb: Path) -> None:
    lines = '{"text": "ok"}\n\n{"body": "no text"}\n'
    reason = reason_for(write(kb / "data.jsonl", lines))
    assert reason.startswith("no 'text' field in line 3")
    assert reason.endswith("choose the field with json_field")


def test_jsonl_bad_line_skips_the_whole_file_in_a_folder(kb: Path) -> None:
    write(kb / "a.jsonl", '{"text": "good"}\n[1, 2]\n')
    write(kb / "b.txt", "fine")
    documents, problems = load_path(kb)
    assert [d.source for d in documents] == ["b.txt"]
    assert problems == [LoadProblem(kb / "a.jsonl", "line 2 is a JSON array, not an object")]


# --------------------------------------------------------------------------- CSV

CSV = "title,body,author,year\r\nFirst,Hello there,Ann,2020\r\n\r\nSecond,,Bob,\r\n"


def test_csv_good_one_document_per_row_with_all_columns(kb: Path) -> None:
    documents = load_file(write(kb / "rows.csv", CSV))
    assert [d.source for d in documents] == ["rows.csv#1", "rows.csv#2"]
    assert documents[0].text == "title: First\nbody: Hello there\nauthor: Ann\nyear: 2020"
    assert documents[1].text == "title: Second\nauthor: Bob"
    assert all(d.metadata == {"type": "csv"} for d in documents)
    assert all(d.title is None for d in documents)


def test_csv_chosen_columns_form_the_text_and_others_are_metadata(kb: Path) -> None:
    csv_text = 'title,body,author\nFirst,"Multi\nline body",Ann\nEmpty,,Bob\n'
    options = LoadOptions(csv_columns=["body", "title"])
    documents = load_file(write(kb / "rows.csv", csv_text), options)
    assert [d.text for d in documents] == [
        "body: Multi\nline body\ntitle: First",
        "title: Empty",
    ]
    assert documents[0].metadata == {"type": "csv", "author": "Ann"}


def test_csv_unknown_column_lists_the_header(kb: Path) -> None:
    path = write(kb / "rows.csv", CSV)
    reason = reason_for(path, LoadOptions(csv_columns=["body", "summary"]))
    assert reason.startswith("unknown CSV column 'summary'")
    assert "the header has: 'title', 'body', 'author', 'year'" in reason
    assert "csv_columns" in reason


def test_csv_header_only_is_a_problem(kb: Path) -> None:
    assert "no data rows" in reason_for(write(kb / "rows.csv", "a,b\n"))


# --------------------------------------------------------------------------- folders


def make_tree(kb: Path) -> None:
    write(kb / "readme.md", "# Readme\n\ntop")
    write(kb / "notes.txt", "notes")
    write(kb / "docs" / "guide.md", "guide")
    write(kb / "docs" / "deep" / "api.md", "api")
    write(kb / "drafts" / "wip.md", "wip")
    write(kb / "image.png", b"\x89PNG\r\n\x1a\n\x00")


def test_folder_loads_supported_files_recursively_in_sorted_order(kb: Path) -> None:
    make_tree(kb)
    documents, problems = load_path(kb)
    assert problems == []
    assert [d.source for d in documents] == [
        "docs/deep/api.md",
        "docs/guide.md",
        "drafts/wip.md",
        "notes.txt",
        "readme.md",
    ]
    assert documents[0].path == kb / "docs" / "deep" / "api.md"
    assert documents[-1].title == "Readme"


def test_folder_include_and_exclude_globs(kb: Path) -> None:
    make_tree(kb)
    options = LoadOptions(include=["**/*.md"], exclude=["drafts/**"])
    documents, _ = load_path(kb, options)
    assert [d.source for d in documents] == ["docs/deep/api.md", "docs/guide.md", "readme.md"]


def test_folder_exclude_by_folder_name_and_anchored_include(kb: Path) -> None:
    make_tree(kb)
    documents, _ = load_path(kb, LoadOptions(exclude=["docs", "*.txt"]))
    assert [d.source for d in documents] == ["drafts/wip.md", "readme.md"]
    documents, _ = load_path(kb, LoadOptions(include=["docs/**/api.md", "./readme.md"]))
    assert [d.source for d in documents] == ["docs/deep/api.md", "readme.md"]


def test_folder_skips_hidden_files_and_folders(kb: Path) -> None:
    write(kb / "visible.txt", "seen")
    write(kb / ".secret.txt", "hidden file")
    write(kb / ".git" / "notes.md", "hidden folder")
    write(kb / "sub" / ".cache" / "x.md", "nested hidden folder")
    documents, problems = load_path(kb)
    assert [d.source for d in documents] == ["visible.txt"]
    assert problems == []


def test_bad_file_in_folder_becomes_a_problem_and_others_load(kb: Path) -> None:
    write(kb / "a.txt", "alpha")
    write(kb / "b.pdf", b"%PDF-1.4\nnot really a pdf")
    write(kb / "c.txt", b"")
    write(kb / "d.md", "delta")
    documents, problems = load_path(kb)
    assert [d.source for d in documents] == ["a.txt", "d.md"]
    assert [p.path for p in problems] == [kb / "b.pdf", kb / "c.txt"]
    assert problems[0].reason.startswith("the PDF cannot be parsed")
    assert problems[1].reason == "empty file"


def test_size_limit_refuses_without_reading(kb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(kb / "big.txt", "x" * 5000)
    original_open = Path.open

    def guarded_open(self: Path, *args: object, **kwargs: object) -> object:
        assert self != path, "a file over the limit must not be opened"
        return original_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", guarded_open)
    reason = reason_for(path, LoadOptions(max_bytes=1024))
    assert reason == "larger than the 1 KB limit (4.9 KB); raise max_bytes or split it"
    write(kb / "small.txt", "small")
    documents, problems = load_path(kb, LoadOptions(max_bytes=1024))
    assert [d.source for d in documents] == ["small.txt"]
    assert [p.path for p in problems] == [path]


def test_default_size_limit_message_in_megabytes(kb: Path) -> None:
    path = kb / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(int(31.2 * 1024 * 1024))  # sparse: nothing is written
    reason = reason_for(path)
    assert reason == "larger than the 20 MB limit (31.2 MB); raise max_bytes or split it"


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(LoadError, match="does not exist; check the path") as caught:
        load_path(missing)
    assert str(missing) in str(caught.value)
    with pytest.raises(LoadError, match="does not exist; check the path"):
        load_file(missing / "a.txt")


def test_glob_that_matches_nothing(kb: Path) -> None:
    make_tree(kb)
    with pytest.raises(LoadError) as caught:
        load_path(kb, LoadOptions(include=["**/*.rst"]))
    message = str(caught.value)
    assert message.startswith(f"no file under {kb} matches include ['**/*.rst']")
    assert "supported types: .txt, .md" in message


def test_folder_without_supported_files(kb: Path) -> None:
    write(kb / "photo.png", b"\x89PNG")
    with pytest.raises(LoadError, match="no supported file under"):
        load_path(kb)


def test_unsupported_suffix_for_a_single_file(kb: Path) -> None:
    path = write(kb / "letter.docx", b"PK\x03\x04")
    reason = reason_for(path)
    assert reason.startswith("unsupported file type '.docx'; supported types: ")
    assert all(suffix in reason for suffix in SUPPORTED)
    with pytest.raises(LoadError, match="unsupported file type"):
        load_path(path)


def test_single_file_through_load_path(kb: Path) -> None:
    path = write(kb / "Upper.TXT", "shouting suffix")
    documents, problems = load_path(path, LoadOptions(include=["*.md"]))
    assert [(d.source, d.text) for d in documents] == [("Upper.TXT", "shouting suffix")]
    assert problems == []
    with pytest.raises(LoadError, match="empty file"):
        load_path(write(kb / "blank.txt", " "))


def test_root_gives_a_posix_relative_source(kb: Path) -> None:
    path = write(kb / "a" / "b" / "c.txt", "deep")
    assert one(path).source == "c.txt"
    assert load_file(path, root=kb)[0].source == "a/b/c.txt"
    with pytest.raises(LoadError, match="is not inside"):
        load_file(path, root=kb / "elsewhere")


def test_load_file_on_a_folder_points_to_load_path(kb: Path) -> None:
    assert "use load_path" in reason_for(kb)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (LoadOptions(include="*.md"), "include must be a list"),  # type: ignore[arg-type]
        (LoadOptions(max_bytes=0), "max_bytes must be a positive"),
        (LoadOptions(json_field=""), "json_field must name a field"),
        (LoadOptions(csv_columns=[]), "csv_columns is empty"),
    ],
)
def test_bad_options_are_whole_call_errors(kb: Path, options: LoadOptions, expected: str) -> None:
    write(kb / "a.txt", "alpha")
    with pytest.raises(LoadError, match=expected):
        load_path(kb, options)


def test_load_error_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        load_path(tmp_path / "missing")
