// The requests table: newest first and live, one line of prompt and answer per call, fitting a
// 1280-pixel window (fixed column widths, long values cut with the whole value on hover).
import { api, clipped, filterBar, filterPairs, FILTERS, fmt, go, h, hashParams, isError, main, statusLine } from "./dom.js";
import { openRequest, setLoadMore } from "./drawer.js";

const POLL_MS = 2000;
const LIST_FILTERS = FILTERS.map((f) => f[0]);
const SINCE = ["24h", ["15m", "1h", "24h", "7d", "30d", ""]];
// [header, width class, numeric]: widths in app.css; the prompt/answer column takes what is left.
const COLUMNS = [
  ["", "c-sel"], ["Id", "c-id"], ["Time", "c-time"], ["Status", "c-status"], ["Model", "c-model"], ["Prompt / answer", "c-preview"],
  ["User / session", "c-user"], ["Tokens", "c-tokens", true], ["Cost", "c-cost", true], ["Latency", "c-ms", true], ["TTFT", "c-ttft", true],
  ["Properties", "c-props"],
];

function line(text, className) {
  return h("div", { className: "line " + (className || ""), title: text || null }, text || "–");
}

function requestRow(r, selected, onSelect) {
  const check = h("input", { type: "checkbox", "aria-label": "select for prompt diff", onclick: (e) => e.stopPropagation(), onchange: (e) => onSelect(r.request_id, e.target.checked) });
  check.checked = selected.has(r.request_id);
  const pills = [
    ...Object.entries(r.properties || {}).map(([k, v]) => h("span", { className: "pill", title: `${k}=${v}` }, `${k}=${v}`)),
    ...Object.entries(r.scores || {}).map(([k, v]) => h("span", { className: "pill score", title: `${k}: ${v}` }, `${k}: ${v}`)),
  ];
  const failed = isError(r);
  return h(
    "tr",
    { "data-id": r.request_id, className: failed ? "failed" : null, onclick: () => openRequest(r.request_id) },
    h("td", {}, check),
    h("td", {}, h("code", { title: r.request_id }, fmt.short(r.request_id))),
    h("td", { title: r.created_at }, fmt.time(r.created_at)),
    h("td", {}, h("span", { className: "pill " + (failed ? "err" : "ok") }, String(r.status)), r.error_type ? line(r.error_type, "error small") : null),
    h("td", {}, line(r.model), line([r.provider, r.stream ? "stream" : null].filter(Boolean).join(" · "), "muted small")),
    h("td", { className: "preview" }, line(r.request_preview || (r.request_body_ref ? "(body stored apart)" : null)), line(r.response_preview, failed ? "error" : "muted")),
    h("td", {}, line(r.user_id), h("div", { className: "line muted small" }, clipped(r.session_id, 10))),
    h("td", { className: "num", title: "tokens in / out" }, `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`),
    h("td", { className: "num" }, fmt.cost(r.cost_usd)),
    h("td", { className: "num" }, fmt.ms(r.latency_ms)),
    h("td", { className: "num" }, fmt.ms(r.ttft_ms)),
    h("td", { className: "pills" }, pills.length ? pills : h("span", { className: "muted" }, "–"))
  );
}

// What to do when the list is empty: send a call (nothing recorded yet), or widen the filters.
async function emptyState(params) {
  const newest = await api("requests", [["limit", "1"]]).catch(() => ({ data: [] }));
  if (!newest.data.length) {
    const origin = location.origin;
    return h(
      "div",
      { className: "empty" },
      h("h2", {}, "No requests yet"),
      h("p", {}, "Point an SDK at relaylog instead of the provider (your provider key passes through untouched) and send a call: it appears here within two seconds."),
      h("pre", { className: "raw" }, `from openai import OpenAI\nclient = OpenAI(base_url="${origin}/v1")\n\nfrom anthropic import Anthropic\nclient = Anthropic(base_url="${origin}/anthropic")`),
      h("p", { className: "muted" }, "On AWS, use the stack's ProxyUrl output instead of this address. Gemini, Groq, Mistral and the others: the README's Providers table.")
    );
  }
  const r = newest.data[0];
  const all = new URLSearchParams(params);
  for (const name of LIST_FILTERS) all.delete(name);
  all.set("since", "");
  return h(
    "div",
    { className: "empty" },
    h("h2", {}, "No requests match these filters"),
    h("p", {}, `The newest call was at ${fmt.when(r.created_at)}. `, h("a", { href: "#/requests?" + all.toString() }, "Show every request"), " or widen the time range.")
  );
}

export async function requestsView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", SINCE[0]);
  const selected = new Set();
  const compare = h("button", { type: "button", className: "plain", disabled: true, onclick: () => go("diff", new URLSearchParams({ a: [...selected][0], b: [...selected][1] })) }, "Compare prompts of 2 selected");
  const onSelect = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    compare.disabled = selected.size !== 2;
  };
  const sort = h("select", { name: "sort" }, ["time", "cost", "latency"].map((v) => h("option", { value: v }, v)));
  sort.value = params.get("sort") || "time";
  const body = h("tbody");
  const table = h(
    "table",
    { id: "requests", className: "list" },
    h("colgroup", {}, COLUMNS.map(([, width]) => h("col", { className: width }))),
    h("thead", {}, h("tr", {}, COLUMNS.map(([label, , num]) => h("th", { className: num ? "num" : null }, label)))),
    body
  );
  const more = h("button", { type: "button", className: "plain more", id: "more", hidden: true }, "Load more");
  const empty = h("div");
  const wrap = h("div", { className: "table-wrap" }, table);
  main.replaceChildren(
    h("div", { className: "title" }, h("h1", {}, "Requests"), compare),
    filterBar(LIST_FILTERS, params, (next) => go("requests", next), [h("label", {}, "Sort", sort)], SINCE),
    wrap,
    empty,
    more
  );
  const base = [...filterPairs(params, LIST_FILTERS), ["sort", params.get("sort") || "time"]];
  const seen = new Set();
  let cursor = null;
  const load = async () => {
    const page = await api("requests", [...base, ["limit", "50"], ["cursor", cursor]]);
    for (const r of page.data) {
      seen.add(r.request_id);
      body.append(requestRow(r, selected, onSelect));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    setLoadMore(cursor ? load : null);
    wrap.hidden = !body.children.length;
    empty.replaceChildren(body.children.length ? "" : await emptyState(params));
  };
  more.addEventListener("click", () => load().catch((err) => (statusLine.textContent = err.message)));
  await load();
  // Live: new calls at the top, without reloading. Only for the newest-first view.
  if ((params.get("sort") || "time") !== "time") return null;
  return setInterval(async () => {
    try {
      const page = await api("requests", [...base, ["limit", "50"]]);
      const fresh = page.data.filter((r) => !seen.has(r.request_id));
      for (const r of fresh.reverse()) {
        seen.add(r.request_id);
        const row = requestRow(r, selected, onSelect);
        row.classList.add("new");
        body.prepend(row);
      }
      if (fresh.length) {
        empty.replaceChildren();
        wrap.hidden = false;
      }
      statusLine.textContent = "live · updated " + new Date().toLocaleTimeString();
    } catch (err) {
      statusLine.textContent = "live updates paused: " + err.message;
    }
  }, POLL_MS);
}
