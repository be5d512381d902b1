"""The HTML report of an eval run: one self-contained file that opens offline.

``render_html(run)`` returns the page and ``write_html(run, path)`` writes it atomically. The
page holds the run's header (suite, status, counts), the matrix (a row per cell, a column per
metric: mean ± half the 95% interval, marked against its threshold), plots drawn here as inline
SVG (means with intervals, score and latency distributions, cost), and every result row,
worst first, filterable by text and cell.

Everything that comes from a suite, a case or a model is HTML-escaped, and no user text is
placed inside the page's script. Nothing is fetched from elsewhere: no scripts, fonts,
styles or images. Long texts are cut (``MAX_TEXT`` characters) with a note, so a run with long
answers still gives a file a browser opens quickly. The same run always renders the same page.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import EvalRun, ResultRow
from .summary import CellSummary, MetricSummary, summarize

__all__ = ["render_html", "write_html"]

MAX_TEXT = 2_000  # characters of an input, output or reason shown in the table
MAX_SNIPPET = 600  # characters of an expected answer, passage or tool call
MAX_LISTED = 50  # unreadable rows, passages or tool calls listed before "… and N more"
MAX_DOTS = 300  # answers a cell's distribution shows as dots; more make a histogram
MAX_ROWS = 2_000  # answers listed in the table (the worst ones); the figures use every answer


def write_html(run: EvalRun, path: Path) -> None:
    """Write the report to ``path`` (folders made as needed); a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(run)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def render_html(run: EvalRun) -> str:
    """The run as one HTML page (UTF-8, inline CSS, SVG and script)."""
    cells = summarize(run)
    kinds = _metric_kinds(run)
    title = f"{run.name} · eval run {run.id[:8]}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        _header(run, cells),
    ]
    if not run.rows:
        hint = (
            ""
            if run.status == "done"
            else f" Resume it with <code>outcrop eval run SUITE --resume {_e(run.id[:8])}</code>."
        )
        parts.append(f'<p class="empty">No results in this run: no case was answered.{hint}</p>')
    else:
        parts += [_matrix(run, cells, kinds), _plots(run, cells, kinds), _rows(run, cells, kinds)]
    parts.append("</main>")
    if run.rows:
        parts.append(f"<script>{_JS}</script>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# -- text -------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` escaped, cut at ``limit`` characters with a note saying how much is left out."""
    if len(text) <= limit:
        return _e(text)
    return (
        f'{_e(text[:limit])}<span class="note"> … {len(text) - limit:,} more characters '
        "not shown</span>"
    )


def _metric_kinds(run: EvalRun) -> dict[str, str]:
    """metric (its label) → the metric it is (``latency_ms``, ``cost``, a quality metric…)."""
    out: dict[str, str] = {}
    for m in run.suite.get("metrics", []):
        spec = {"name": m} if isinstance(m, str) else dict(m)
        out[str(spec.get("label") or spec["name"])] = str(spec["name"])
    return out


def _usd(value: float) -> str:
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}"
    return f"${value:.6f}"


def _fmt(value: float | None, kind: str = "") -> str:
    """A metric's value as the report shows it (``—`` for none)."""
    if value is None or not math.isfinite(value):
        return "—"
    if kind == "cost":
        return _usd(value)
    if kind in ("latency_ms", "tokens") or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _score(value: object) -> float | None:
    """A stored score as a finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _shade(value: float, light: bool = True) -> str:
    """Red (0) through yellow to green (1), for scores in [0, 1]."""
    hue = 120 * min(max(value, 0.0), 1.0)
    return f"hsl({hue:.0f}, 70%, 85%)" if light else f"hsl({hue:.0f}, 55%, 50%)"


def _natural(text: str) -> list[tuple[int, int | str]]:
    """Sort key that puts case 2 before case 10."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text) if t]


# -- header -----------------------------------------------------------------


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _header(run: EvalRun, cells: list[CellSummary]) -> str:
    rows = run.rows
    errors = sum(r.status != "ok" for r in rows)
    cached = sum(bool(r.cached) for r in rows)
    invalid = sum(int(r.judge_invalid or 0) for r in rows)
    cases = len({r.case_id for r in rows})
    took = ""
    if run.finished_at is not None and run.finished_at >= run.created_at:
        took = f" · took {run.finished_at - run.created_at:,.1f} s"
    facts = [
        ("results", f"{len(rows)} / {run.total}", len(rows) < run.total),
        ("cells", str(len(cells)), False),
        ("cases", str(cases), False),
        ("errors", str(errors), errors > 0),
        ("cached", str(cached), False),
        ("unreadable rows", str(len(run.corrupt)), bool(run.corrupt)),
        ("missing judge verdicts", str(invalid), invalid > 0),
    ]
    out = [
        "<header>",
        f"<h1>{_e(run.name)}</h1>",
        f'<p class="meta">run <code>{_e(run.id)}</code> · '
        f'<span class="status status-{_e(run.status)}">{_e(run.status)}</span> · '
        f"started {_e(_when(run.created_at))}{_e(took)}</p>",
        '<dl class="facts">',
    ]
    for label, value, warn in facts:
        cls = ' class="warn"' if warn else ""
        out.append(f"<div{cls}><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>")
    out.append("</dl>")
    if run.status != "done" and run.rows:
        out.append(
            f'<p class="banner">This run is {_e(run.status)}: {len(rows)} of {run.total} '
            "results are in, so the figures below may change when it is resumed.</p>"
        )
    if run.corrupt:
        listed = "".join(f"<li>{_e(c)}</li>" for c in run.corrupt[:MAX_LISTED])
        more = len(run.corrupt) - MAX_LISTED
        if more > 0:
            listed += f"<li>… and {more} more</li>"
        out.append(
            f"<details><summary>{len(run.corrupt)} result row(s) could not be read and are "
            f"left out of every figure</summary><ul>{listed}</ul></details>"
        )
    if invalid:
        out.append(
            f'<p class="note">{invalid} judge verdict(s) could not be read; those scores are '
            "recorded as missing, not as zero.</p>"
        )
    out.append("</header>")
    return "\n".join(out)


# -- matrix -----------------------------------------------------------------


def _threshold_text(s: MetricSummary, kind: str) -> str:
    if s.threshold is None:
        return ""
    return ("≥ " if s.higher_is_better else "≤ ") + _fmt(s.threshold, kind)


def _metric_cell(s: MetricSummary, kind: str) -> str:
    if s.mean is None:
        return '<td class="num na" title="no scores">—</td>'
    text = _e(_fmt(s.mean, kind))
    tip = f"n = {s.n}"
    if s.ci_low is not None and s.ci_high is not None:
        tip += f"; 95% interval [{_fmt(s.ci_low, kind)}, {_fmt(s.ci_high, kind)}]"
        if s.ci_high > s.ci_low:
            half = (s.ci_high - s.ci_low) / 2
            shown = (
                f"{half:.2f}" if kind not in ("latency_ms", "tokens", "cost") else _fmt(half, kind)
            )
            text += f' <span class="ci">± {_e(shown)}</span>'
    if s.passed is not None:
        tip += f"; threshold {_threshold_text(s, kind)}"
        mark = ("pass", "✓", "meets") if s.passed else ("fail", "✗", "misses")
        text += f' <span class="{mark[0]}" title="{mark[2]} its threshold">{mark[1]}</span>'
    style = f' style="background:{_shade(s.mean)}"' if s.higher_is_better else ""
    return f'<td class="num"{style} title="{_e(tip)}">{text}</td>'


def _matrix(run: EvalRun, cells: list[CellSummary], kinds: dict[str, str]) -> str:
    metrics = list(run.metric_directions())
    thresholds = run.thresholds()
    head = [
        "<th>prompt</th>",
        "<th>model</th>",
        '<th class="num">rows</th>',
        '<th class="num">errors</th>',
    ]
    for m in metrics:
        higher = run.metric_directions()[m]
        note = "higher is better" if higher else "lower is better"
        if m in thresholds:
            note += f"; threshold {'≥' if higher else '≤'} {_fmt(thresholds[m], kinds.get(m, m))}"
        arrow = "↑" if higher else "↓"
        head.append(f'<th class="num" title="{_e(note)}">{_e(m)} {arrow}</th>')
    head += [
        '<th class="num">p50 latency ms</th>',
        '<th class="num">p95 latency ms</th>',
        '<th class="num">tokens</th>',
        '<th class="num">cost</th>',
        '<th class="num">cached</th>',
        '<th class="num" title="judge verdicts that could not be read">no verdict</th>',
    ]
    body = []
    for c in cells:
        tds = [
            f"<td>{_e(c.prompt)}</td>",
            f"<td>{_e(c.model)}</td>",
            f'<td class="num">{c.rows}</td>',
            f'<td class="num{" bad" if c.errors else ""}">{c.errors}</td>',
        ]
        tds += [_metric_cell(c.metrics[m], kinds.get(m, m)) for m in metrics]
        tds += [
            f'<td class="num">{_e(_fmt(c.latency_p50_ms, "latency_ms"))}</td>',
            f'<td class="num">{_e(_fmt(c.latency_p95_ms, "latency_ms"))}</td>',
            f'<td class="num">{c.tokens:,}</td>',
            f'<td class="num">{_e(_usd(c.cost_usd))}</td>',
            f'<td class="num">{c.cached}</td>',
            f'<td class="num{" bad" if c.judge_invalid else ""}">{c.judge_invalid}</td>',
        ]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(
        [
            '<section id="matrix">',
            "<h2>Matrix</h2>",
            '<p class="note">Each metric: mean ± half its 95% bootstrap interval over the '
            "cell's answers (hover for n and the interval); ✓/✗ against the suite's threshold. "
            "Quality metrics are shaded red (0) to green (1).</p>",
            '<div class="scroll"><table class="matrix">',
            "<thead><tr>" + "".join(head) + "</tr></thead>",
            "<tbody>",
            *body,
            "</tbody>",
            "</table></div>",
            "</section>",
        ]
    )


# -- plots ------------------------------------------------------------------

_PLOT_W = 340  # width of a plot's data area, px
_BINS = 34  # histogram bins across it


@dataclass
class _Axis:
    hi: float
    ticks: list[float]
    fmt: Callable[[float], str]
    label: str


def _nice_axis(values: Sequence[float], label: str, prefix: str = "") -> _Axis:
    """An axis from 0 to a round number at or above every value; ticks at 1, 2, 2.5 or 5 × 10^k,
    written with as many decimals as the step needs (``prefix`` before each, e.g. ``$``)."""
    top = max([v for v in values if math.isfinite(v)], default=0.0)
    if top <= 0:
        return _Axis(1.0, [0.0, 0.5, 1.0], lambda v: f"{prefix}{v:g}", label)
    raw = top / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    n = max(1, math.ceil(top / step - 1e-9))
    decimals = next((d for d in range(12) if abs(round(step, d) - step) < step * 1e-6), 12)
    return _Axis(
        n * step, [i * step for i in range(n + 1)], lambda v: f"{prefix}{v:,.{decimals}f}", label
    )


def _unit_axis(label: str) -> _Axis:
    return _Axis(1.0, [0.0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v:g}", label)


def _label_width(cells: Sequence[CellSummary]) -> int:
    longest = max([len(t) for c in cells for t in (c.prompt, c.model)] + [8])
    return min(round(longest * 6.6) + 16, 250)


def _short(text: str, width: int) -> str:
    """``text`` cut in the middle to fit ``width`` px, keeping both ends (versions, sizes)."""
    limit = max(round((width - 16) / 6.6), 9)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


class _Plot:
    """A horizontal chart: a band per cell, a shared x axis under them."""

    def __init__(self, title: str, cells: Sequence[CellSummary], axis: _Axis, band: int = 32):
        self.title = title
        self.cells = list(cells)
        self.axis = axis
        self.band = band
        self.left = _label_width(self.cells)
        self.top = 30
        self.right = 60  # the value column right of the data area; widened by its notes
        self.height = self.top + band * len(self.cells) + 46
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        v = min(max(value, 0.0), self.axis.hi)
        return self.left + v / self.axis.hi * _PLOT_W

    def y(self, i: int) -> float:
        return self.top + self.band * i + self.band / 2

    def add(self, element: str) -> None:
        self.parts.append(element)

    def note(self, i: int, text: str) -> None:
        self.right = max(self.right, round(len(text) * 6.4) + 16)
        self.add(
            f'<text x="{self.left + _PLOT_W + 10}" y="{self.y(i) + 4:.1f}" '
            f'class="val">{_e(text)}</text>'
        )

    def svg(self) -> str:
        bottom = self.top + self.band * len(self.cells)
        width = self.left + _PLOT_W + self.right
        out = [
            f'<svg width="{width}" height="{self.height}" '
            f'viewBox="0 0 {width} {self.height}" role="img" aria-label="{_e(self.title)}">',
            f"<title>{_e(self.title)}</title>",
            f'<text x="0" y="16" class="ttl">{_e(self.title)}</text>',
        ]
        for i in range(len(self.cells)):
            if i % 2:
                out.append(
                    f'<rect x="0" y="{self.top + self.band * i}" width="{width}" '
                    f'height="{self.band}" class="band"/>'
                )
        for t in self.axis.ticks:
            x = self.x(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{self.top}" x2="{x:.1f}" y2="{bottom + 4}" class="grid"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{bottom + 17}" class="tick">{_e(self.axis.fmt(t))}</text>'
            )
        out.append(
            f'<line x1="{self.left}" y1="{bottom}" x2="{self.left + _PLOT_W}" y2="{bottom}" '
            'class="axis"/>'
        )
        out.append(
            f'<text x="{self.left + _PLOT_W / 2:.1f}" y="{bottom + 36}" class="xl">'
            f"{_e(self.axis.label)}</text>"
        )
        for i, c in enumerate(self.cells):
            y = self.y(i)
            out.append(
                f'<text x="{self.left - 8}" y="{y - 2:.1f}" class="lbl"><title>{_e(c.cell)}</title>'
                f'{_e(_short(c.prompt, self.left))}<tspan x="{self.left - 8}" dy="12" class="sub">'
                f"{_e(_short(c.model, self.left))}</tspan></text>"
            )
        out += self.parts
        out.append("</svg>")
        return "".join(out)


def _means_chart(metric: str, cells: list[CellSummary]) -> str:
    """(a) Each cell's mean of a quality metric, its 95% interval, and the threshold."""
    plot = _Plot(f"{metric}: mean and 95% interval", cells, _unit_axis(metric))
    threshold = None
    for i, c in enumerate(cells):
        s = c.metrics[metric]
        threshold = s.threshold
        y = plot.y(i)
        if s.mean is None:
            plot.note(i, "no scores")
            continue
        x0, xm = plot.x(0), plot.x(s.mean)
        plot.add(
            f'<rect x="{x0:.1f}" y="{y - 8:.1f}" width="{max(xm - x0, 1):.1f}" height="16" '
            f'fill="{_shade(s.mean, light=False)}"/>'
        )
        if s.ci_low is not None and s.ci_high is not None and s.ci_high > s.ci_low:
            lo, hi = plot.x(s.ci_low), plot.x(s.ci_high)
            plot.add(
                f'<path d="M{lo:.1f} {y:.1f}H{hi:.1f}M{lo:.1f} {y - 5:.1f}V{y + 5:.1f}'
                f'M{hi:.1f} {y - 5:.1f}V{y + 5:.1f}" class="whisker"/>'
            )
        mark = "" if s.passed is None else (" ✓" if s.passed else " ✗")
        plot.note(i, f"{s.mean:.3f} (n {s.n}){mark}")
    if threshold is not None and cells:
        x = plot.x(threshold)
        bottom = plot.top + plot.band * len(cells)
        plot.add(
            f'<line x1="{x:.1f}" y1="{plot.top - 4}" x2="{x:.1f}" y2="{bottom}" class="thr"/>'
            f'<text x="{x:.1f}" y="{plot.top - 6}" class="thrl">threshold {threshold:g}</text>'
        )
    return plot.svg()


def _jitter(i: int) -> float:
    """A spread in [-0.5, 0.5) for the i-th dot, the same on every render."""
    return (i * 0.6180339887) % 1.0 - 0.5


def _strip_chart(
    title: str,
    cells: list[CellSummary],
    values: list[list[float]],
    axis: _Axis,
    colour: str,
    marks: list[list[tuple[float, str]]],
    notes: list[str],
) -> str:
    """(b, c) A band per cell: every answer's value as a dot, or a histogram where a cell has
    more than ``MAX_DOTS`` answers; ``marks`` draw ticks (mean, p50, p95) with a tooltip."""
    plot = _Plot(title, cells, axis, band=36)
    for i, vals in enumerate(values):
        y = plot.y(i)
        if len(vals) > MAX_DOTS:
            counts = [0] * _BINS
            for v in vals:
                counts[min(int(min(max(v, 0.0), axis.hi) / axis.hi * _BINS), _BINS - 1)] += 1
            width = _PLOT_W / _BINS
            for b, n in enumerate(counts):
                if n:
                    h = 26 * n / max(counts)
                    plot.add(
                        f'<rect x="{plot.x(0) + b * width:.1f}" y="{y + 13 - h:.1f}" '
                        f'width="{width - 1:.1f}" height="{h:.1f}" fill="{colour}" class="dot">'
                        f"<title>{n} answer(s)</title></rect>"
                    )
        else:
            for j, v in enumerate(vals):
                plot.add(
                    f'<circle cx="{plot.x(v):.1f}" cy="{y + _jitter(j) * 20:.1f}" r="3.5" '
                    f'fill="{colour}" class="dot"/>'
                )
        for value, name in marks[i]:
            x = plot.x(value)
            plot.add(
                f'<line x1="{x:.1f}" y1="{y - 13:.1f}" x2="{x:.1f}" y2="{y + 13:.1f}" '
                f'class="mark"><title>{_e(name)}</title></line>'
            )
        plot.note(i, notes[i])
    return plot.svg()


def _cost_chart(cells: list[CellSummary]) -> str:
    """(d) Each cell's total cost, with its tokens beside it."""
    axis = _nice_axis([c.cost_usd for c in cells], "total cost, USD", "$")
    plot = _Plot("cost per cell", cells, axis)
    for i, c in enumerate(cells):
        y = plot.y(i)
        x0, x1 = plot.x(0), plot.x(c.cost_usd)
        plot.add(
            f'<rect x="{x0:.1f}" y="{y - 8:.1f}" width="{max(x1 - x0, 1):.1f}" height="16" '
            'class="cost"/>'
        )
        plot.note(i, f"{_usd(c.cost_usd)} · {c.tokens:,} tok")
    return plot.svg()


def _metric_values(rows: list[ResultRow], metric: str) -> list[float]:
    return [v for r in rows if r.status == "ok" and (v := _score(r.scores.get(metric))) is not None]


def _latencies(rows: list[ResultRow]) -> list[float]:
    return [v for r in rows if r.status == "ok" and (v := _score(r.latency_ms)) is not None]


def _plots(run: EvalRun, cells: list[CellSummary], kinds: dict[str, str]) -> str:
    directions = run.metric_directions()
    quality = [m for m, higher in directions.items() if higher]
    measured = [m for m, higher in directions.items() if not higher]
    by_cell: dict[str, list[ResultRow]] = {c.cell: [] for c in cells}
    for r in run.rows:
        by_cell.setdefault(r.cell, []).append(r)
    out = ['<section id="plots">', "<h2>Plots</h2>"]

    out.append("<h3>Quality metrics: mean per cell</h3>")
    if quality:
        out.append('<div class="charts">')
        out += [_means_chart(m, cells) for m in quality]
        out.append("</div>")
    else:
        out.append('<p class="note">The suite has no quality metric.</p>')

    out.append("<h3>Score distributions</h3>")
    out.append(
        f'<p class="note">A dot per answer (a histogram where a cell has over {MAX_DOTS}); '
        "the black tick is the mean.</p>"
    )
    out.append('<div class="charts">')
    for m in [*quality, *measured]:
        kind = kinds.get(m, m)
        if kind == "latency_ms":
            continue  # the latency chart below shows every answer's latency
        vals = [_metric_values(by_cell[c.cell], m) for c in cells]
        if m in quality:
            axis = _unit_axis(m)
        else:
            prefix = "$" if kind == "cost" else ""
            axis = _nice_axis([v for vs in vals for v in vs], m, prefix)
        marks: list[list[tuple[float, str]]] = []
        notes: list[str] = []
        for c in cells:
            s = c.metrics[m]
            if s.mean is None:
                marks.append([])
                notes.append("no values")
            else:
                marks.append([(s.mean, f"mean {_fmt(s.mean, kind)}")])
                notes.append(f"mean {_fmt(s.mean, kind)} (n {s.n})")
        colour = "#2f6fb0" if m in quality else "#7a5aa8"
        out.append(_strip_chart(f"{m} per answer", cells, vals, axis, colour, marks, notes))
    out.append("</div>")

    out.append("<h3>Latency and cost</h3>")
    out.append('<div class="charts">')
    lat = [_latencies(by_cell[c.cell]) for c in cells]
    lat_axis = _nice_axis([v for vs in lat for v in vs], "latency, ms")
    lat_marks = [
        [
            (p, f"{name} {p:,.0f} ms")
            for p, name in ((c.latency_p50_ms, "p50"), (c.latency_p95_ms, "p95"))
            if p is not None
        ]
        for c in cells
    ]
    lat_notes = [
        f"p50 {_fmt(c.latency_p50_ms, 'latency_ms')} · p95 {_fmt(c.latency_p95_ms, 'latency_ms')}"
        if c.latency_p50_ms is not None
        else "no latencies"
        for c in cells
    ]
    out.append(
        _strip_chart("latency per answer", cells, lat, lat_axis, "#c07a1a", lat_marks, lat_notes)
    )
    if any(c.cost_usd > 0 for c in cells):
        out.append(_cost_chart(cells))
    out.append("</div>")
    if not any(c.cost_usd > 0 for c in cells):
        out.append(
            '<p class="note">No cell recorded a cost (local models cost nothing, and some '
            "providers report no price), so there is no cost chart.</p>"
        )
    out.append("</section>")
    return "\n".join(out)


# -- rows -------------------------------------------------------------------


def _row_worst(row: ResultRow, quality: list[str]) -> float | None:
    scores = [s for m in quality if (s := _score(row.scores.get(m))) is not None]
    return min(scores) if scores else None


def _row_fails(row: ResultRow, directions: dict[str, bool], thresholds: dict[str, float]) -> bool:
    """An error, a missing judge verdict, or a score on the wrong side of its threshold
    (0.5 for a quality metric without one)."""
    if row.status != "ok" or row.judge_invalid:
        return True
    for m, higher in directions.items():
        v = _score(row.scores.get(m))
        if v is None:
            continue
        limit = thresholds.get(m, 0.5 if higher else None)
        if limit is not None and (v < limit if higher else v > limit):
            return True
    return False


def _evidence(row: ResultRow, metrics: list[str]) -> str:
    parts: list[str] = []
    summary: list[str] = []
    if row.contexts:
        summary.append(f"{len(row.contexts)} passage(s)")
        items = []
        for i, c in enumerate(row.contexts[:MAX_LISTED], start=1):
            source = c.get("source")
            score = _score(c.get("score"))
            head = f"[{i}]" + (f" {source}" if source else "")
            head += f" (score {score:.3f})" if score is not None else ""
            items.append(f"<li><b>{_e(head)}</b> {_clip(str(c.get('text', '')), MAX_SNIPPET)}</li>")
        if len(row.contexts) > MAX_LISTED:
            items.append(f"<li>… and {len(row.contexts) - MAX_LISTED} more</li>")
        parts.append(f"<div><b>retrieved</b><ol>{''.join(items)}</ol></div>")
    if row.tool_calls:
        summary.append(f"{len(row.tool_calls)} tool call(s)")
        items = []
        for call in row.tool_calls[:MAX_LISTED]:
            args = json.dumps(call.get("arguments", {}), ensure_ascii=False, default=str)
            ok = call.get("ok")
            flag = "" if ok is None else (" ✓" if ok else " ✗ failed")
            items.append(
                f"<li><code>{_e(call.get('name', '?'))}({_clip(args, MAX_SNIPPET)})</code>"
                f"{_e(flag)}</li>"
            )
        if len(row.tool_calls) > MAX_LISTED:
            items.append(f"<li>… and {len(row.tool_calls) - MAX_LISTED} more</li>")
        parts.append(f"<div><b>tool calls</b><ol>{''.join(items)}</ol></div>")
    other = {k: v for k, v in row.reasons.items() if k not in metrics}
    for k, v in sorted(other.items()):
        summary.append(str(k))
        parts.append(f"<div><b>{_e(k)}</b>: {_clip(str(v))}</div>")
    facts = []
    if row.trace_id:
        facts.append(f"trace {row.trace_id}")
    if row.cached:
        facts.append("answered from the cache")
    if row.judge_invalid:
        facts.append(f"{row.judge_invalid} judge verdict(s) missing")
    if facts:
        parts.append(f'<div class="note">{_e(" · ".join(facts))}</div>')
    if not parts:
        return "—"
    label = ", ".join(summary) or "details"
    return f"<details><summary>{_e(label)}</summary>{''.join(parts)}</details>"


def _score_cell(row: ResultRow, metric: str, higher: bool, kind: str, limit: float | None) -> str:
    v = _score(row.scores.get(metric)) if row.status == "ok" else None
    reason = row.reasons.get(metric)
    why = f'<div class="reason">{_clip(str(reason))}</div>' if reason else ""
    if v is None:
        return f'<td class="num na" data-v="">—{why}</td>'
    style = f' style="background:{_shade(v)}"' if higher else ""
    mark = ""
    if limit is not None and (v < limit if higher else v > limit):
        mark = ' <span class="fail">✗</span>'
    return f'<td class="num"{style} data-v="{v!r}"><b>{_e(_fmt(v, kind))}</b>{mark}{why}</td>'


def _rows(run: EvalRun, cells: list[CellSummary], kinds: dict[str, str]) -> str:
    directions = run.metric_directions()
    thresholds = run.thresholds()
    metrics = list(directions)
    quality = [m for m, higher in directions.items() if higher]
    index = {c.cell: i for i, c in enumerate(cells)}

    def order(r: ResultRow) -> tuple[Any, ...]:
        worst = _row_worst(r, quality)
        return (
            r.status == "ok",
            2.0 if worst is None else worst,
            index.get(r.cell, len(index)),
            _natural(r.case_id),
            r.repeat,
        )

    everything = sorted(run.rows, key=order)
    failing = sum(_row_fails(r, directions, thresholds) for r in everything)
    rows = everything[:MAX_ROWS]
    left_out = ""
    if len(everything) > len(rows):
        left_out = (
            f" Only the worst {len(rows):,} of {len(everything):,} answers are listed; "
            f"<code>outcrop eval report {_e(run.id[:8])} --json</code> prints them all."
        )
    head = [
        '<th data-sort="1">case</th>',
        '<th data-sort="1">cell</th>',
        '<th data-sort="1" class="num">rep</th>',
        "<th>tags</th>",
        "<th>input</th>",
        "<th>output</th>",
        "<th>expected</th>",
        '<th data-sort="1" class="num" title="lowest quality score of the row">worst</th>',
    ]
    head += [f'<th data-sort="1" class="num">{_e(m)}</th>' for m in metrics]
    head += [
        '<th data-sort="1" class="num">latency ms</th>',
        '<th data-sort="1" class="num">tokens</th>',
        '<th data-sort="1" class="num">cost</th>',
        "<th>evidence</th>",
    ]
    body = []
    for r in rows:
        bad = _row_fails(r, directions, thresholds)
        worst = _row_worst(r, quality)
        output = ""
        if r.status != "ok":
            output += (
                f'<div class="error">{_e(r.status)}: {_clip(str(r.error or "no message"))}</div>'
            )
        if r.output:
            output += f'<div class="text">{_clip(str(r.output))}</div>'
        expected = "".join(
            f'<div class="exp">{_clip(str(x), MAX_SNIPPET)}</div>' for x in r.expected[:MAX_LISTED]
        )
        if len(r.expected) > MAX_LISTED:
            expected += f'<div class="note">… and {len(r.expected) - MAX_LISTED} more</div>'
        tags = " ".join(f'<span class="tag">{_e(t)}</span>' for t in r.tags)
        latency = _score(r.latency_ms)
        cost = _score(r.cost_usd)
        tokens = int(r.input_tokens or 0) + int(r.output_tokens or 0)
        worst_style = f' style="background:{_shade(worst)}"' if worst is not None else ""
        tds = [
            f"<td>{_e(r.case_id)}</td>",
            f'<td data-v="{index.get(r.cell, -1)}">{_e(r.cell)}</td>',
            f'<td class="num">{_e(r.repeat)}</td>',
            f"<td>{tags}</td>",
            f'<td class="long"><div class="text">{_clip(str(r.question or ""))}</div></td>',
            f'<td class="long">{output}</td>',
            f'<td class="long">{expected}</td>',
            f'<td class="num"{worst_style} data-v="{"" if worst is None else repr(worst)}">'
            f"{_e(_fmt(worst))}</td>",
        ]
        tds += [
            _score_cell(r, m, directions[m], kinds.get(m, m), thresholds.get(m)) for m in metrics
        ]
        tds += [
            f'<td class="num" data-v="{"" if latency is None else repr(latency)}">'
            f"{_e(_fmt(latency, 'latency_ms'))}</td>",
            f'<td class="num" data-v="{tokens}">{tokens:,}</td>',
            f'<td class="num" data-v="{"" if cost is None else repr(cost)}">'
            f"{_e('—' if cost is None else _usd(cost))}</td>",
            f'<td class="long">{_evidence(r, metrics)}</td>',
        ]
        cls = ' class="bad"' if bad else ""
        body.append(
            f'<tr{cls} data-cell="{index.get(r.cell, -1)}" data-bad="{int(bad)}">'
            + "".join(tds)
            + "</tr>"
        )
    options = "".join(f'<option value="{i}">{_e(c.cell)}</option>' for i, c in enumerate(cells))
    return "\n".join(
        [
            '<section id="rows">',
            "<h2>Every answer</h2>",
            f'<p class="note">Errors first, then the lowest quality score first; {failing:,} of '
            f"{len(everything):,} answers are flagged (an error, a missing judge verdict, or a "
            "score on the wrong side of its threshold — 0.5 for a quality metric without one). "
            f"Click a column heading to sort.{left_out}</p>",
            '<div class="filters">',
            '<input id="q" type="search" placeholder="filter: any text in the row" '
            'aria-label="filter rows by text">',
            '<select id="cell" aria-label="filter rows by cell">'
            f'<option value="">all cells</option>{options}</select>',
            '<label><input id="failing" type="checkbox"> flagged rows only</label>',
            f'<span id="shown">{len(rows)} of {len(rows)} rows</span>',
            "</div>",
            '<div class="scroll"><table id="answers">',
            "<thead><tr>" + "".join(head) + "</tr></thead>",
            "<tbody>",
            *body,
            "</tbody>",
            "</table></div>",
            "</section>",
        ]
    )


# -- page assets ------------------------------------------------------------

_CSS = """
:root{color-scheme:light;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
font-size:14px;color:#1d2330;background:#fff}
main{max-width:1900px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #dde;
padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:#556;margin:0 0 12px}
.status{font-weight:600;padding:1px 7px;border-radius:9px;background:#e6ebf2}
.status-done{background:#d5efd9;color:#1d5e2a}.status-interrupted,.status-running{background:#fbe7c6;
color:#7a4b00}
.facts{display:flex;flex-wrap:wrap;gap:8px;margin:0}
.facts div{border:1px solid #dde;border-radius:6px;padding:6px 12px;min-width:90px}
.facts dt{font-size:11.5px;color:#667;text-transform:uppercase;letter-spacing:.03em}
.facts dd{margin:2px 0 0;font-size:18px;font-weight:600}
.facts .warn{border-color:#e0a040;background:#fff6e6}
.banner{background:#fff6e6;border:1px solid #e0a040;padding:8px 12px;border-radius:6px}
.empty{font-size:16px;padding:24px;border:1px dashed #aab;border-radius:8px;text-align:center}
.note{color:#667;font-size:12.5px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #dde;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f5f9;position:sticky;top:0}
th[data-sort]{cursor:pointer}th[data-sort]:hover{background:#e6ebf2}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{white-space:normal}.matrix td:nth-child(-n+2){white-space:nowrap}
.matrix td.num{white-space:normal}.matrix .ci{white-space:nowrap}
.ci{color:#445;font-size:11.5px}
.pass{color:#1d7a32;font-weight:700}.fail{color:#b3261e;font-weight:700}
td.bad{color:#b3261e;font-weight:700}.na{color:#99a}
.charts{display:flex;flex-wrap:wrap;gap:18px 28px}
svg{max-width:100%;height:auto;font-size:12px}
svg .ttl{font-weight:600;font-size:13px}svg .lbl{text-anchor:end;fill:#334}
svg .sub{fill:#667;font-size:11px}
svg .tick{text-anchor:middle;fill:#556;font-size:11px}svg .xl{text-anchor:middle;fill:#334}
svg .val{fill:#334;font-size:11.5px}svg .band{fill:#f6f7fa}
svg .grid{stroke:#e3e6ec}svg .axis{stroke:#667}
svg .whisker{stroke:#1d2330;stroke-width:1.5;fill:none}
svg .thr{stroke:#b3261e;stroke-dasharray:4 3;stroke-width:1.5}
svg .thrl{fill:#b3261e;font-size:10.5px;text-anchor:middle}
svg .dot{fill-opacity:.45}svg .mark{stroke:#1d2330;stroke-width:2}
svg .cost{fill:#4f8f6a}
.filters{display:flex;gap:12px;align-items:center;margin:8px 0;flex-wrap:wrap}
.filters input[type=search]{width:320px;padding:5px 8px}
#shown{color:#556}
#answers tr.bad>td:first-child{box-shadow:inset 4px 0 #b3261e}
td.long{min-width:180px;max-width:360px}
#answers td:first-child{white-space:nowrap}#answers td:nth-child(2){min-width:150px}
.text{white-space:pre-wrap;word-break:break-word;max-height:240px;overflow:auto}
.exp{white-space:pre-wrap;border-bottom:1px dotted #ccd;padding:1px 0}
.reason{font-weight:400;font-size:11.5px;color:#334;text-align:left;white-space:normal;
min-width:150px;max-width:260px;max-height:160px;overflow:auto;margin-top:2px}
.error{color:#b3261e;font-weight:600;white-space:pre-wrap}
.tag{display:inline-block;background:#e6ebf2;border-radius:8px;padding:0 6px;margin:1px;
font-size:11.5px}
details summary{cursor:pointer;color:#2f5fa0}
details ol{padding-left:20px;margin:4px 0}details li{margin:3px 0;white-space:pre-wrap}
"""

_JS = """
(function () {
  var q = document.getElementById("q"), cell = document.getElementById("cell"),
      flagged = document.getElementById("failing"), shown = document.getElementById("shown");
  var body = document.querySelector("#answers tbody");
  var rows = Array.prototype.slice.call(body.rows);
  function apply() {
    var text = q.value.trim().toLowerCase(), n = 0;
    rows.forEach(function (r) {
      var keep = (cell.value === "" || r.dataset.cell === cell.value) &&
        (!flagged.checked || r.dataset.bad === "1") &&
        (text === "" || r.textContent.toLowerCase().indexOf(text) >= 0);
      r.hidden = !keep;
      if (keep) n++;
    });
    shown.textContent = n + " of " + rows.length + " rows";
  }
  q.addEventListener("input", apply);
  cell.addEventListener("change", apply);
  flagged.addEventListener("change", apply);
  document.querySelectorAll("#answers th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = th.cellIndex, up = th.dataset.dir !== "asc";
      th.dataset.dir = up ? "asc" : "desc";
      function key(r) {
        var c = r.cells[col];
        return c.dataset.v !== undefined ? c.dataset.v : c.textContent;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        var nx = parseFloat(x), ny = parseFloat(y);
        var d = isNaN(nx) || isNaN(ny) ? x.localeCompare(y, undefined, {numeric: true}) : nx - ny;
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  apply();
})();
"""
