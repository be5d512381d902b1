"""Tests for outcrop.evals.report: the self-contained HTML report of an eval run."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from outcrop.evals import report
from outcrop.evals.report import render_html, write_html
from outcrop.evals.runner import EvalRun, ResultRow

SUITE = {
    "name": "capitals",
    "metrics": ["exact_match", {"name": "judge", "rubric": "r", "threshold": 0.5}, "latency_ms"],
}
CREATED = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
XSS = "<script>alert(1)</script>"


def row(
    case: str,
    *,
    prompt: str = "qa@1",
    model: str = "local:tiny",
    repeat: int = 0,
    exact: float | None = 1.0,
    judge: float | None = 1.0,
    latency: float = 100.0,
    **fields: object,
) -> ResultRow:
    r = ResultRow(
        prompt=prompt,
        model=model,
        case_id=case,
        repeat=repeat,
        status="ok",
        output=f"answer to {case}",
        scores={"exact_match": exact, "judge": judge, "latency_ms": latency},
        reasons={"judge": f"judged {case}"},
        latency_ms=latency,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.001,
        question=f"question {case}?",
        expected=[f"gold {case}"],
        tags=["geo"],
    )
    for name, value in fields.items():
        setattr(r, name, value)
    return r


def make_run(rows: list[ResultRow], **fields: object) -> EvalRun:
    run = EvalRun(
        id="0123456789abcdef",
        suite=SUITE,
        status="done",
        created_at=CREATED,
        finished_at=CREATED + 12.5,
        total=len(rows),
        rows=rows,
        corrupt=[],
    )
    for name, value in fields.items():
        setattr(run, name, value)
    return run


@pytest.fixture
def run() -> EvalRun:
    """Two cells. In qa@1 × local:tiny exact_match is 1, 1, 0 (mean 0.667) and judge is
    0.5, 1, 0 (mean 0.500); in qa@2 × local:big every score is 1 but one case errored."""
    rows = [
        row("c1", judge=0.5, latency=100.0),
        row("c2", latency=200.0),
        row("c3", exact=0.0, judge=0.0, latency=300.0, output=XSS, tags=["<b>tag</b>"]),
        row("c1", prompt="qa@2", model="local:big", latency=50.0),
        row("c2", prompt="qa@2", model="local:big", latency=70.0),
        row(
            "c3",
            prompt="qa@2",
            model="local:big",
            status="error",
            output="",
            scores={},
            reasons={},
            latency_ms=None,
            error="ProviderError: the server said 503 <busy>",
        ),
    ]
    return make_run(rows, total=8, corrupt=["case 9 (qa@1 × local:tiny, repeat 0): unreadable"])


class Balance(HTMLParser):
    """Counts opening and closing tags of the elements a page must nest properly."""

    CHECKED = frozenset(
        {
            *("html", "head", "body", "main", "header", "section", "div", "span", "p", "label"),
            *("table", "thead", "tbody", "tr", "td", "th", "ul", "ol", "li", "dl", "dt", "dd"),
            *("details", "summary", "select", "option", "script", "style", "title", "svg", "text"),
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.CHECKED:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect/>, <line/>…: complete in themselves

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.CHECKED:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def check_well_formed(page: str) -> None:
    parser = Balance()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def test_write_html_writes_the_report_atomically(run: EvalRun, tmp_path: Path) -> None:
    path = tmp_path / "reports" / "nested" / "run.html"
    write_html(run, path)
    page = path.read_text(encoding="utf-8")
    assert page == render_html(run)
    assert page.startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["run.html"]  # no temporary file left
    write_html(run, path)  # replacing an existing report works too
    assert path.read_text(encoding="utf-8") == page


def test_header_shows_the_run_and_its_counts(run: EvalRun) -> None:
    page = render_html(run)
    assert "<h1>capitals</h1>" in page
    assert "0123456789abcdef" in page
    assert "2023-11-14 22:13:20 UTC" in page
    assert "took 12.5 s" in page

    def fact(label: str) -> str:
        found = re.search(rf"<dt>{label}</dt><dd>([^<]*)</dd>", page)
        assert found, label
        return found.group(1)

    assert fact("results") == "6 / 8"
    assert fact("errors") == "1"
    assert fact("unreadable rows") == "1"
    assert fact("missing judge verdicts") == "0"
    assert "case 9 (qa@1 × local:tiny, repeat 0): unreadable" in page


def test_matrix_shows_each_cell_with_hand_computed_means(run: EvalRun) -> None:
    page = render_html(run)
    matrix = page[page.index('<section id="matrix">') : page.index('<section id="plots">')]
    rows = re.findall(r"<tr>(.*?)</tr>", matrix, flags=re.S)[1:]
    assert len(rows) == 2
    tiny = next(r for r in rows if "local:tiny" in r)
    big = next(r for r in rows if "local:big" in r)
    cells = [re.sub(r"<[^>]+>", "", td) for td in re.findall(r"<td[^>]*>(.*?)</td>", tiny)]
    assert cells[:4] == ["qa@1", "local:tiny", "3", "0"]  # prompt, model, rows, errors
    assert cells[4].startswith("0.667 ±")  # exact_match: (1 + 1 + 0) / 3
    assert cells[5].startswith("0.500 ±") and cells[5].endswith("✓")  # judge meets 0.5
    assert cells[6].startswith("200 ±")  # latency_ms: (100 + 200 + 300) / 3
    assert "background:hsl(" in tiny  # quality metrics are shaded
    big_cells = [re.sub(r"<[^>]+>", "", td) for td in re.findall(r"<td[^>]*>(.*?)</td>", big)]
    assert big_cells[2:4] == ["3", "1"]  # one of its three rows errored
    assert big_cells[4] == "1.000"  # no interval for identical scores
    assert big_cells[5] == "1.000 ✓"


def test_failing_threshold_is_marked(run: EvalRun) -> None:
    for r in run.rows:
        if r.model == "local:tiny":
            r.scores["judge"] = 0.2
    page = render_html(run)
    matrix = page[page.index('<section id="matrix">') : page.index('<section id="plots">')]
    assert '<span class="fail" title="misses its threshold">✗</span>' in matrix


def test_every_case_and_cell_is_in_the_drill_down(run: EvalRun) -> None:
    page = render_html(run)
    answers = page[page.index('<section id="rows">') :]
    body = answers[answers.index("<tbody>") : answers.index("</tbody>")]
    trs = re.findall(r"<tr\b[^>]*>.*?</tr>", body, flags=re.S)
    assert len(trs) == len(run.rows)
    for r in run.rows:
        assert f"<td>{r.case_id}</td>" in body
        assert f"{r.prompt} × {r.model}" in body
    assert "judged c1" in body  # the judge's reason
    assert "question c2?" in body and "gold c2" in body
    assert "data-cell=" in body and '<option value="1">' in answers
    # worst first: the error row, then the row that scored 0
    assert "503" in trs[0]
    assert "<td>c3</td>" in trs[1] and "local:tiny" in trs[1]
    assert 'data-bad="1"' in trs[0] and 'data-bad="1"' in trs[1]
    assert 'data-bad="0"' in trs[-1]


def test_error_rows_show_their_error(run: EvalRun) -> None:
    page = render_html(run)
    assert '<div class="error">error: ProviderError: the server said 503 &lt;busy&gt;</div>' in page


def test_user_text_is_escaped(run: EvalRun) -> None:
    run.rows[0].case_id = '"><img src=x onerror=alert(2)>'
    run.rows[0].model = "<i>model</i>"
    run.suite = {**SUITE, "name": "<script>alert(3)</script>"}
    page = render_html(run)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page.lower()
    assert "<img" not in page
    assert "<i>model</i>" not in page and "&lt;i&gt;model&lt;/i&gt;" in page
    assert "<b>tag</b>" not in page
    assert page.count("<script>") == 1  # the page's own filter script, nothing else
    check_well_formed(page)


def test_no_external_resources(run: EvalRun) -> None:
    page = render_html(run).lower()
    for needle in ('src="http', "src='http", 'href="http', "href='http", "<link", "@import"):
        assert needle not in page
    assert "url(" not in page
    assert "<script src" not in page


def test_svgs_parse_as_xml_and_cover_every_plot(run: EvalRun) -> None:
    page = render_html(run)
    blocks = svgs(page)
    titles = []
    for block in blocks:
        root = ET.fromstring(block)
        assert root.tag == "svg"
        titles.append(root.findtext("title"))
    assert titles == [
        "exact_match: mean and 95% interval",
        "judge: mean and 95% interval",
        "exact_match per answer",
        "judge per answer",
        "latency per answer",
        "cost per cell",
    ]
    for block in blocks:  # axes are labelled
        assert 'class="xl"' in block


def test_render_is_deterministic(run: EvalRun) -> None:
    assert render_html(run) == render_html(run)


def test_page_is_well_formed(run: EvalRun) -> None:
    check_well_formed(render_html(run))


def test_empty_run_says_there_are_no_results(tmp_path: Path) -> None:
    empty = make_run([], status="interrupted", finished_at=None, total=4)
    path = tmp_path / "empty.html"
    write_html(empty, path)
    page = path.read_text(encoding="utf-8")
    assert "No results in this run" in page
    assert "<table" not in page and "<svg" not in page and "<script" not in page
    check_well_formed(page)


def test_long_outputs_are_cut_with_a_note(run: EvalRun) -> None:
    run.rows[1].output = "x" * 50_000
    page = render_html(run)
    assert "x" * 2_000 in page and "x" * 2_001 not in page
    assert "48,000 more characters not shown" in page
    assert len(page) < 60_000


def test_contexts_and_tool_calls_are_shown(run: EvalRun) -> None:
    run.rows[0].contexts = [{"source": "paris.md", "text": "Paris <is> the capital", "score": 0.9}]
    run.rows[0].tool_calls = [{"name": "calculator", "arguments": {"x": "<1>"}, "ok": False}]
    page = render_html(run)
    assert "1 passage(s), 1 tool call(s)" in page
    assert "[1] paris.md (score 0.900)" in page
    assert "Paris &lt;is&gt; the capital" in page
    assert "calculator({&quot;x&quot;: &quot;&lt;1&gt;&quot;})" in page
    check_well_formed(page)


def test_missing_judge_verdicts_and_costless_runs(run: EvalRun) -> None:
    run.rows[0].judge_invalid = 1
    run.rows[0].scores["judge"] = None
    for r in run.rows:
        r.cost_usd = None
    page = render_html(run)
    assert re.search(r"<dt>missing judge verdicts</dt><dd>1</dd>", page)
    assert "No cell recorded a cost" in page
    assert "cost per cell" not in page
    for block in svgs(page):
        ET.fromstring(block)


def test_a_huge_run_lists_only_its_worst_answers(
    run: EvalRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAX_ROWS", 2)
    page = render_html(run)
    body = page[page.index('<section id="rows">') :]
    assert len(re.findall(r"<tr\b[^>]*data-cell=", body)) == 2
    assert "Only the worst 2 of 6 answers are listed" in body
    assert "outcrop eval report 01234567 --json" in body
    assert "503" in body  # the error row is among the worst
    check_well_formed(page)


def test_an_empty_finished_run_suggests_no_resume() -> None:
    page = render_html(make_run([]))
    assert "No results in this run" in page
    assert "--resume" not in page


def test_crowded_cells_draw_histograms(run: EvalRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_DOTS", 1)
    page = render_html(run)
    assert "<circle" not in page
    assert "<title>2 answer(s)</title>" in page  # qa@1 exact_match: two answers scored 1
    for block in svgs(page):
        ET.fromstring(block)
