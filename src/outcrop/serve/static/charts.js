// Small inline SVG charts over time buckets: bars (overlaid, later series in front) or
// lines (gaps where a bucket has no value). No library; every label is text.

import { el, svg } from "./common.js";

const W = 480;
const H = 170;
const PAD = { left: 56, right: 12, top: 12, bottom: 26 };

/** A round upper bound for the axis (1, 2 or 5 times a power of ten); for counts, one whose
 * half is a whole number too. */
function niceMax(value, integer) {
  if (!(value > 0)) return integer ? 2 : 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const steps = integer && power === 1 ? [2, 4, 6, 8, 10] : [1, 2, 5, 10];
  for (const step of steps) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function clock(epochSeconds, withDate) {
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDate ? `${d.getMonth() + 1}/${d.getDate()} ${time}` : time;
}

/**
 * A chart of `series` over `starts` (bucket start times, epoch seconds).
 * series: [{name, values: [number|null], cls}]; kind: "bars" | "lines".
 */
export function chart({ title, starts, bucket, series, kind = "lines", format = String, integer }) {
  const n = starts.length;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  // Counts get an axis whose middle line is a whole number too.
  const top = niceMax(Math.max(0, ...all), integer);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = n ? plotW / n : plotW;
  const x = (i) => PAD.left + i * step;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const end = n ? starts[n - 1] + bucket : 0;
  const withDate = n && new Date(starts[0] * 1000).getDate() !== new Date(end * 1000).getDate();

  const grid = [0, top / 2, top].map((v) =>
    svg(
      "g",
      { class: "grid" },
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)),
    ),
  );
  const axis = n
    ? [
        svg("text", { class: "axis", x: PAD.left, y: H - 8 }, clock(starts[0], withDate)),
        svg(
          "text",
          { class: "axis", x: PAD.left + plotW / 2, y: H - 8, "text-anchor": "middle" },
          clock((starts[0] + end) / 2, withDate),
        ),
        svg(
          "text",
          { class: "axis", x: W - PAD.right, y: H - 8, "text-anchor": "end" },
          clock(end, withDate),
        ),
      ]
    : [];

  const marks = [];
  series.forEach((s) => {
    if (kind === "bars") {
      s.values.forEach((v, i) => {
        if (!v) return;
        const width = Math.max(1, step * 0.8);
        marks.push(
          svg(
            "rect",
            {
              class: `bar ${s.cls}`,
              x: x(i) + (step - width) / 2,
              y: y(v),
              width,
              height: Math.max(0.5, PAD.top + plotH - y(v)),
            },
            svg("title", null, `${clock(starts[i], withDate)} · ${s.name}: ${format(v)}`),
          ),
        );
      });
      return;
    }
    let points = [];
    const flush = () => {
      if (points.length > 1) {
        marks.push(svg("polyline", { class: `line ${s.cls}`, points: points.join(" ") }));
      }
      points = [];
    };
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) {
        flush();
        return;
      }
      const cx = x(i) + step / 2;
      points.push(`${cx.toFixed(1)},${y(v).toFixed(1)}`);
      marks.push(
        svg(
          "circle",
          { class: `dot ${s.cls}`, cx, cy: y(v), r: 2.5 },
          svg("title", null, `${clock(starts[i], withDate)} · ${s.name}: ${format(v)}`),
        ),
      );
    });
    flush();
  });
  // Bars of zero are nothing to show; a line at zero (a judge mean of 0) is a reading.
  const empty = kind === "bars" ? !all.some((v) => v) : !all.length;
  if (empty) {
    marks.push(
      svg(
        "text",
        {
          class: "empty",
          x: PAD.left + plotW / 2,
          y: PAD.top + plotH / 2,
          "text-anchor": "middle",
        },
        "nothing in this range",
      ),
    );
  }
  const picture = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: `chart ${kind}` },
    grid,
    axis,
    marks,
  );
  const legend = el(
    "div",
    { class: "legend" },
    series.map((s) => el("span", null, el("i", { class: `swatch ${s.cls}` }), s.name)),
  );
  return el("figure", { class: "chart-box" }, el("figcaption", null, title), picture, legend);
}
