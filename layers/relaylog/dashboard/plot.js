// Charts on uPlot (shipped in the package as uPlot.iife.min.js, MIT): bars stacked by group, lines
// that stay visible when they overlap, whole-number ticks for counts, and a tooltip with the exact
// values of the bucket under the cursor.
/* global uPlot */
import { h } from "./dom.js";

export const COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#64748b", "#db2777", "#4d7c0f"];
export const ERROR_COLOR = "#dc2626";
const INK = "#667085";
const GRID = "#eceef2";
const HEIGHT = 210;
// Tick steps for counts: whole numbers only.
const pad = (n) => String(n).padStart(2, "0");
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
// Time ticks in 24-hour local time; the date where a day starts (or for ticks a day or more apart).
function timeTicks(u, splits, axis, space, incr) {
  return splits.map((t, i) => {
    const d = new Date(t * 1000);
    const day = `${MONTHS[d.getMonth()]} ${d.getDate()}`;
    if (incr >= 86400) return day;
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const previous = i > 0 ? new Date(splits[i - 1] * 1000) : null;
    return previous && previous.getDate() !== d.getDate() ? `${clock}\n${day}` : clock;
  });
}
const WHOLE = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];

// keys: the series in the order they are listed (the legend's), whatever order they are drawn in.
function tooltip(format, title, keys) {
  const tip = h("div", { className: "u-tip", hidden: true });
  return {
    hooks: {
      init: (u) => u.over.append(tip),
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i === null || i === undefined || u.cursor.left < 0) {
          tip.hidden = true;
          return;
        }
        const rows = [];
        for (const key of keys) {
          const series = u.series.find((x) => x.key === key);
          const value = series.raw[i];
          if (!series.show || value === null || value === undefined) continue;
          const swatch = h("i");
          swatch.style.background = series.color;
          rows.push(h("div", { className: "tip-row" }, swatch, h("span", {}, series.label), h("b", {}, format(value))));
        }
        tip.replaceChildren(h("div", { className: "tip-head" }, title(u.data[0][i], i)), ...(rows.length ? rows : [h("div", { className: "muted" }, "no calls")]));
        tip.hidden = false;
        // Beside the cursor, on whichever side has room.
        const left = u.cursor.left + 14;
        tip.style.left = (left + tip.offsetWidth > u.over.clientWidth ? u.cursor.left - tip.offsetWidth - 14 : left) + "px";
        tip.style.top = Math.max(0, Math.min(u.cursor.top - 10, u.over.clientHeight - tip.offsetHeight)) + "px";
      },
    },
  };
}

// Lines join the buckets that have values across the empty ones between them; a dot marks each
// value while there are few (sparse calls, or a single one, which no line could show).
const MAX_DOTS = 40;
function dots(u, s) {
  const found = [];
  u.data[s].forEach((y, i) => y !== null && y !== undefined && found.push(i));
  return found.length <= MAX_DOTS ? found : [];
}

function legend(u, series) {
  return h(
    "div",
    { className: "legend" },
    series.map((s, i) => {
      const swatch = h("i", { className: s.dash ? "dashed" : null });
      swatch.style.background = s.color;
      const item = h("button", { type: "button", className: "legend-item", "aria-pressed": "true", title: "show or hide" }, swatch, s.label);
      item.addEventListener("click", () => {
        const index = u.series.findIndex((x) => x.key === s.key);
        const on = !u.series[index].show;
        u.setSeries(index, { show: on });
        item.setAttribute("aria-pressed", String(on));
      });
      return item;
    })
  );
}

/**
 * One chart in a card. spec: {title, x: each bar's middle (seconds, or bucket numbers), xRange, time,
 * xLabel(x) for the tooltip, xValues(splits) for an axis that is not time, series: [{label,
 * color, values, kind: "bar"|"line", width, dash, point}], stacked (bars add up), format, whole
 * (count ticks), empty (the text when there is nothing to draw)}.
 */
export function chartCard(spec) {
  const card = h("div", { className: "card chart", "data-chart": spec.title }, h("h2", {}, spec.title, spec.note ? h("span", { className: "muted note" }, " " + spec.note) : null));
  const hasData = spec.series.some((s) => s.values.some((v) => v !== null && v !== undefined && v !== 0));
  if (!hasData) {
    card.append(h("p", { className: "muted chart-empty" }, spec.empty || "No calls in this range."));
    return card;
  }
  // Stacked bars: each drawn from 0 to the sum of itself and those below, largest first, so every
  // group's slice shows; the tooltip reads each group's own value.
  let drawn = spec.series.map((s) => ({ ...s, data: s.values }));
  if (spec.stacked) {
    const sums = spec.x.map(() => 0);
    drawn = drawn.map((s) => ({ ...s, data: s.values.map((v, i) => (sums[i] += v || 0)) })).reverse();
  }
  const plot = h("div", { className: "plot" });
  card.append(plot);
  const bars = uPlot.paths.bars({ size: [0.86, 64, 1] });
  const opts = {
    width: 400,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false, setScale: false }, points: { show: !spec.stacked && !spec.series.every((s) => s.kind === "bar") } },
    scales: {
      x: { time: Boolean(spec.time), range: () => spec.xRange || [spec.x[0] - 0.5, spec.x[spec.x.length - 1] + 0.5] },
      y: { range: (u, min, max) => [0, spec.whole ? Math.max(1, Math.ceil(max * 1.1)) : max > 0 ? max * 1.12 : 1] },
    },
    axes: [
      { stroke: INK, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID }, space: 64, values: spec.time ? timeTicks : (u, splits) => splits.map(spec.xValues) },
      { stroke: INK, grid: { stroke: GRID, width: 1 }, ticks: { show: false }, size: 64, space: 28, values: (u, splits) => splits.map(spec.format), ...(spec.whole ? { incrs: WHOLE } : {}) },
    ],
    series: [
      {},
      ...drawn.map((s) => ({
        key: s.label,
        label: s.label,
        color: s.color,
        raw: s.values,
        stroke: s.color,
        fill: s.kind === "bar" ? s.color : undefined,
        width: s.kind === "bar" ? 0 : s.width || 2,
        dash: s.dash,
        paths: s.kind === "bar" ? bars : undefined,
        spanGaps: true,
        points: s.kind === "bar" ? { show: false } : { show: false, size: s.point || 6, fill: s.color, stroke: "#fff", width: 1, filter: dots },
      })),
    ],
    plugins: [tooltip(spec.format, spec.xLabel, spec.series.map((x) => x.label))],
  };
  const u = new uPlot(opts, [spec.x, ...drawn.map((s) => s.data)], plot);
  plot.uplot = u; // for the browser tests: what was drawn, not only that a canvas exists
  card.append(legend(u, spec.series));
  const fit = () => u.setSize({ width: Math.max(200, plot.clientWidth), height: HEIGHT });
  new ResizeObserver(fit).observe(plot);
  requestAnimationFrame(fit);
  return card;
}
