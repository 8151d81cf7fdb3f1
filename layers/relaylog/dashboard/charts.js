// The charts view: the time span fits the calls by default (from a little before the first call of
// the last 30 days to now), and the API picks the bucket for it (minutes up to three hours).
import { api, filterBar, filterPairs, fmt, go, h, hashParams, main } from "./dom.js";
import { chartCard, COLORS, ERROR_COLOR } from "./plot.js";

const CHART_FILTERS = ["since", "model", "provider", "user", "status", "property"];
const SINCE = ["auto", ["auto", "15m", "1h", "24h", "7d", "30d"]];
const STEP_S = { minute: 60, hour: 3600, day: 86400 };
const MIN_SPAN_MS = 15 * 60e3;

// A little before the oldest call of the last 30 days matching the filters; null when there is none.
async function fittedSince(filters) {
  const oldest = await api("requests", [...filters, ["since", "30d"], ["order", "asc"], ["limit", "1"]]);
  if (!oldest.data.length) return null;
  const first = Date.parse(oldest.data[0].created_at);
  const now = Date.now();
  const since = Math.min(first - Math.max((now - first) * 0.05, 60e3), now - MIN_SPAN_MS);
  return new Date(since).toISOString();
}

// Every bucket start of the span, in seconds: quiet stretches show as empty, not skipped.
function bucketStarts(data) {
  const step = STEP_S[data.bucket];
  const end = (data.until ? Date.parse(data.until) : Date.now()) / 1000;
  const starts = [];
  for (let t = Math.floor(Date.parse(data.since) / 1000 / step) * step; t < end && starts.length <= 2000; t += step) starts.push(t);
  return starts;
}

// The tooltip's title: the bucket a bar's middle (in seconds) is in, e.g. "Nov 26 14:05 – 14:06".
function bucketLabel(step) {
  const clock = (d) => `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  return (middle) => {
    const from = new Date((middle - step / 2) * 1000);
    const day = from.toDateString().slice(4, 10);
    return step === 86400 ? day : `${day} ${clock(from)} – ${clock(new Date((middle + step / 2) * 1000))}`;
  };
}

// [{t, ...}] as one value per bucket start; `empty` where a bucket has no point.
function column(points, starts, read, empty) {
  const at = new Map(points.map((p) => [Date.parse(p.t) / 1000, p]));
  return starts.map((t) => (at.has(t) ? read(at.get(t)) : empty));
}

// Buckets of the API's log-scale histogram (four per doubling), the empty ones between filled in.
function histogramBars(buckets) {
  const index = (b) => (b.from_ms === 0 ? 0 : Math.round(Math.log2(b.from_ms) * 4) + 1);
  const counts = new Map(buckets.map((b) => [index(b), b.count]));
  const bounds = (i) => [i === 0 ? 0 : 2 ** ((i - 1) / 4), 2 ** (i / 4)];
  const first = Math.min(...counts.keys());
  const last = Math.max(...counts.keys());
  const bars = [];
  for (let i = first; i <= last; i++) bars.push({ bounds: bounds(i), count: counts.get(i) || 0 });
  return bars;
}

// One series per group (the API's top groups), or one for everything when not grouped.
function groupSeries(data, read, starts, kind, empty) {
  if (!data.by) return [{ label: "all", color: COLORS[0], kind, values: column(data.series, starts, read, empty) }];
  const keys = [...new Set(data.group_series.map((p) => p.key))];
  return keys.map((key, i) => ({
    label: String(key ?? "(none)"),
    color: COLORS[i % COLORS.length],
    kind,
    values: column(data.group_series.filter((p) => p.key === key), starts, read, empty),
  }));
}

function tiles(t) {
  const list = [
    ["Requests", fmt.int(t.requests), `${fmt.int(t.requests - t.errors)} ok`],
    ["Errors", fmt.int(t.errors), `${fmt.pct(t.error_rate)} of calls`],
    ["Cost", fmt.cost(t.cost_usd), t.requests > t.cost_unknown ? `${fmt.cost(t.cost_usd / (t.requests - t.cost_unknown))} a call` : "no call priced"],
    ["Tokens", fmt.int(t.input_tokens + t.output_tokens), `in ${fmt.int(t.input_tokens)} · out ${fmt.int(t.output_tokens)}`],
    ["Latency p50", fmt.ms(t.latency_p50_ms), `p95 ${fmt.ms(t.latency_p95_ms)} · p99 ${fmt.ms(t.latency_p99_ms)}`],
    ["TTFT p50", fmt.ms(t.ttft_p50_ms), `p95 ${fmt.ms(t.ttft_p95_ms)} · p99 ${fmt.ms(t.ttft_p99_ms)}`],
  ];
  return h("div", { className: "grid", id: "totals" }, list.map(([k, v, sub]) => h("div", { className: "tile" }, h("span", {}, k), h("b", {}, v), h("small", { title: sub }, sub))));
}

export async function chartsView() {
  const params = hashParams();
  const by = h("select", { name: "by" }, ["", "model", "provider", "user", "session", "key", "status", "prompt"].map((v) => h("option", { value: v }, v || "(none)")));
  by.value = (params.get("by") || "").startsWith("property:") ? "" : params.get("by") || "";
  const property = h("input", { name: "by_property", placeholder: "property name", value: (params.get("by") || "").startsWith("property:") ? params.get("by").slice(9) : "" });
  const bucket = h("select", { name: "bucket" }, ["", "minute", "hour", "day"].map((v) => h("option", { value: v }, v || "auto")));
  bucket.value = params.get("bucket") || "";
  main.replaceChildren(
    h("div", { className: "title" }, h("h1", {}, "Charts")),
    filterBar(CHART_FILTERS, params, (next) => {
      const prop = next.get("by_property");
      next.delete("by_property");
      if (prop) next.set("by", "property:" + prop);
      go("charts", next);
    }, [h("label", {}, "Group by", by), h("label", {}, "or by property", property), h("label", {}, "Bucket", bucket)], SINCE)
  );
  const filters = filterPairs(params, CHART_FILTERS.filter((n) => n !== "since"));
  const chosen = params.get("since") || SINCE[0];
  const since = chosen === "auto" ? await fittedSince(filters) : chosen;
  if (since === null) {
    main.append(h("div", { className: "empty card" }, h("h2", {}, "No calls in the last 30 days"), h("p", {}, "Send calls through relaylog (see the Requests page for how to point an SDK at it), or clear the filters."), h("a", { href: "#/requests" }, "Requests")));
    return;
  }
  const data = (await api("stats", [...filters, ["since", since], ...filterPairs(params, ["by", "bucket"])])).data;
  const starts = bucketStarts(data);
  const step = STEP_S[data.bucket];
  const xLabel = bucketLabel(step);
  const t = data.total;
  main.append(
    h("p", { className: "muted", id: "span" }, `From ${fmt.time(data.since)} to now, one bar per ${data.bucket}${chosen === "auto" ? " (fitted to the calls; pick a range above to change it)" : ""}.`),
    tiles(t)
  );
  if (t.cost_unknown || t.usage_unknown) main.append(h("p", { className: "muted small" }, `${t.cost_unknown} call(s) without a known cost and ${t.usage_unknown} without usage are left out of the sums, not counted as 0.`));
  // Bars stand in the middle of their bucket, so the cursor over a bar picks that bucket.
  const time = { x: starts.map((t) => t + step / 2), xRange: [starts[0], starts[starts.length - 1] + step], time: true, xLabel };
  const latencyLine = (label, field, color, width, point, dash) => ({ label, color, kind: "line", width, point, dash, values: column(data.series, starts, (p) => p[field], null) });
  const requestSeries = data.by
    ? groupSeries(data, (p) => p.requests, starts, "bar", 0)
    : [
        { label: "ok", color: COLORS[0], kind: "bar", values: column(data.series, starts, (p) => p.requests - p.errors, 0) },
        { label: "errors", color: ERROR_COLOR, kind: "bar", values: column(data.series, starts, (p) => p.errors, 0) },
      ];
  const charts = [
    chartCard({ ...time, title: "Requests", series: requestSeries, stacked: true, whole: true, format: fmt.int }),
    chartCard({ ...time, title: "Cost", note: data.by ? `stacked by ${data.by}` : null, series: groupSeries(data, (p) => p.cost_usd, starts, "bar", 0), stacked: true, format: fmt.cost }),
    chartCard({
      ...time,
      title: "Error rate",
      series: [{ label: "error rate", color: ERROR_COLOR, kind: "line", width: 2, point: 7, values: column(data.series, starts, (p) => p.error_rate, null) }],
      format: fmt.pct,
      empty: "No errors in this range.",
    }),
    // Thick lines under thin ones and dashes for TTFT: when percentiles meet, every line still shows.
    chartCard({
      ...time,
      title: "Latency and time to first token",
      series: [
        latencyLine("latency p99", "latency_p99_ms", COLORS[4], 5, 11),
        latencyLine("latency p95", "latency_p95_ms", COLORS[1], 3, 8),
        latencyLine("latency p50", "latency_p50_ms", COLORS[0], 1.5, 5),
        latencyLine("TTFT p95", "ttft_p95_ms", COLORS[3], 2, 6, [8, 5]),
        latencyLine("TTFT p50", "ttft_p50_ms", COLORS[2], 2, 4, [3, 3]),
      ],
      format: fmt.ms,
      empty: "No latencies recorded in this range.",
    }),
    chartCard({
      ...time,
      title: "Tokens",
      series: [
        { label: "input", color: COLORS[0], kind: "bar", values: column(data.series, starts, (p) => p.input_tokens, 0) },
        { label: "output", color: COLORS[2], kind: "bar", values: column(data.series, starts, (p) => p.output_tokens, 0) },
      ],
      stacked: true,
      whole: true,
      format: fmt.int,
    }),
  ];
  const histogram = data.histograms.latency_ms.length ? histogramBars(data.histograms.latency_ms) : [];
  charts.push(
    chartCard({
      title: "Latency histogram",
      note: "calls per latency range",
      x: histogram.map((_, i) => i),
      xValues: (i) => (histogram[i] ? fmt.ms(histogram[i].bounds[0]) : ""),
      xLabel: (i) => (histogram[i] ? `${fmt.ms(histogram[i].bounds[0])} – ${fmt.ms(histogram[i].bounds[1])}` : ""),
      series: [{ label: "calls", color: COLORS[5], kind: "bar", values: histogram.map((b) => b.count) }],
      whole: true,
      format: fmt.int,
      empty: "No latencies recorded in this range.",
    })
  );
  if (data.by) {
    const p95 = groupSeries(data, (p) => p.latency_p95_ms, starts, "line", null);
    charts.push(chartCard({ ...time, title: `Latency p95 by ${data.by}`, series: p95, format: fmt.ms }));
  }
  main.append(h("div", { className: "charts" }, charts));
  if (data.by) {
    const head = h("tr", {}, h("th", {}, data.by), ["Requests", "Errors", "Cost", "p50", "p95", "p99", "TTFT p50"].map((x) => h("th", { className: "num" }, x)));
    const rows = data.groups.map((g) =>
      h("tr", {}, h("td", { title: g.key ?? "(none)" }, g.key ?? "(none)"), [fmt.int(g.requests), fmt.int(g.errors), fmt.cost(g.cost_usd), fmt.ms(g.latency_p50_ms), fmt.ms(g.latency_p95_ms), fmt.ms(g.latency_p99_ms), fmt.ms(g.ttft_p50_ms)].map((v) => h("td", { className: "num" }, v)))
    );
    main.append(h("div", { className: "table-wrap" }, h("table", { id: "groups", className: "list" }, h("thead", {}, head), h("tbody", {}, rows))));
  }
}
