// relaylog dashboard: plain JavaScript, no build step, no third-party code. Every value from the
// API is put on the page with textContent (never innerHTML), so a prompt can never become markup.
"use strict";

const API = new URL("../api/v1/", document.baseURI).pathname;
const POLL_MS = 2000;
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let poller = null;

// -- small helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "className") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US")),
  cost: (n) => (n === null || n === undefined ? "–" : "$" + (n >= 1 ? n.toFixed(2) : n >= 0.01 ? n.toFixed(4) : n.toPrecision(3))),
  ms: (n) => (n === null || n === undefined ? "–" : n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms"),
  time: (t) => (t ? t.replace("T", " ").slice(0, 19) : "–"),
  short: (id) => (id ? id.slice(0, 8) : "–"),
};

function isError(r) {
  return r.status >= 400 || r.status === 0 || r.error_type;
}

function statusPill(r) {
  const text = r.error_type ? `${r.status} ${r.error_type}` : String(r.status);
  return h("span", { className: "pill " + (isError(r) ? "err" : "ok") }, text);
}

// -- API ------------------------------------------------------------------------------------------

class NeedKey extends Error {}

async function api(path, params, init) {
  const url = new URL(API + path, location.origin);
  for (const [name, value] of params || []) if (value !== "" && value !== null && value !== undefined) url.searchParams.append(name, value);
  const headers = { ...(init && init.headers) };
  const key = localStorage.getItem("relaylog-key");
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(url, { ...init, headers });
  const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
  if (response.status === 401) throw new NeedKey(body.error.message);
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function post(path, payload) {
  return api(path, [], { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
}

function askForKey() {
  const form = document.getElementById("key-form").content.firstElementChild.cloneNode(true);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("relaylog-key", form.elements.key.value.trim());
    route();
  });
  main.replaceChildren(form);
}

function showError(err) {
  if (err instanceof NeedKey) return askForKey();
  main.append(h("p", { className: "error card", role: "alert" }, String(err.message || err)));
}

// -- filters shared by the requests, charts, sessions and users views -----------------------------

const FILTERS = [
  ["since", "Since", "select", ["15m", "1h", "24h", "7d", "30d", ""]],
  ["model", "Model"],
  ["provider", "Provider"],
  ["user", "User"],
  ["session", "Session"],
  ["prompt", "Prompt id"],
  ["status", "Status", "select", ["", "ok", "error"]],
  ["property", "Property name=value"],
  ["score", "Score (name>=x)"],
  ["search", "Search bodies"],
];

function hashParams() {
  const query = location.hash.split("?")[1] || "";
  return new URLSearchParams(query);
}

function filterBar(names, params, onApply, extra) {
  const form = h("form", { className: "filters card", "aria-label": "filters" });
  for (const [name, label, kind, choices] of FILTERS.filter((f) => names.includes(f[0]))) {
    let input;
    if (kind === "select") {
      input = h("select", { name }, choices.map((c) => h("option", { value: c }, c === "" ? (name === "since" ? "all" : "any") : c)));
      input.value = params.get(name) ?? (name === "since" ? "24h" : "");
    } else {
      input = h("input", { name, value: params.get(name) || "", className: name === "property" || name === "search" ? "wide" : null });
    }
    form.append(h("label", {}, label, input));
  }
  for (const el of extra || []) form.append(el);
  form.append(h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const el of form.elements) if (el.name && (el.value !== "" || el.name === "since")) next.set(el.name, el.value);
    onApply(next);
  });
  return form;
}

function filterPairs(params, names) {
  return names.filter((n) => params.has(n)).map((n) => [n, params.get(n)]);
}

function go(view, params) {
  const query = params && params.toString();
  location.hash = "#/" + view + (query ? "?" + query : "");
}

// -- requests -------------------------------------------------------------------------------------

const LIST_FILTERS = FILTERS.map((f) => f[0]);

function requestRow(r, selected, onSelect) {
  const check = h("input", { type: "checkbox", "aria-label": "select for prompt diff", onclick: (e) => e.stopPropagation(), onchange: (e) => onSelect(r.request_id, e.target.checked) });
  check.checked = selected.has(r.request_id);
  const props = Object.entries(r.properties || {}).map(([k, v]) => h("span", { className: "pill" }, `${k}=${v}`));
  const scores = Object.entries(r.scores || {}).map(([k, v]) => h("span", { className: "pill" }, `${k}:${v}`));
  return h(
    "tr",
    { "data-id": r.request_id, onclick: () => go("requests/" + encodeURIComponent(r.request_id)) },
    h("td", {}, check),
    h("td", {}, fmt.time(r.created_at)),
    h("td", {}, statusPill(r)),
    h("td", {}, r.model || "–", r.stream ? h("span", { className: "pill" }, "stream") : null),
    h("td", {}, r.user_id || "–"),
    h("td", {}, r.session_id || "–"),
    h("td", { className: "num" }, fmt.int(r.input_tokens)),
    h("td", { className: "num" }, fmt.int(r.output_tokens)),
    h("td", { className: "num" }, fmt.cost(r.cost_usd)),
    h("td", { className: "num" }, fmt.ms(r.latency_ms)),
    h("td", { className: "num" }, fmt.ms(r.ttft_ms)),
    h("td", {}, props, scores)
  );
}

async function requestsView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", "24h");
  const selected = new Set();
  const compare = h("button", { type: "button", className: "plain", disabled: true, onclick: () => go("diff", new URLSearchParams({ a: [...selected][0], b: [...selected][1] })) }, "Compare prompts of 2 selected");
  const onSelect = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    compare.disabled = selected.size !== 2;
  };
  const sort = h("select", { name: "sort" }, ["time", "cost", "latency"].map((v) => h("option", { value: v }, v)));
  sort.value = params.get("sort") || "time";
  main.replaceChildren(
    h("h1", {}, "Requests"),
    filterBar(LIST_FILTERS, params, (next) => go("requests", next), [h("label", {}, "Sort", sort)]),
    h("div", { className: "more" }, compare)
  );
  const body = h("tbody");
  const table = h(
    "table",
    { id: "requests" },
    h("thead", {}, h("tr", {}, ["", "Time", "Status", "Model", "User", "Session"].map((t) => h("th", {}, t)), ["In", "Out", "Cost", "Latency", "TTFT"].map((t) => h("th", { className: "num" }, t)), h("th", {}, "Properties / scores"))),
    body
  );
  const more = h("button", { type: "button", className: "plain more", hidden: true }, "Load more");
  main.append(table, more);
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
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 12, className: "muted" }, "No requests match. Send a call through the proxy and it appears here within seconds.")));
  };
  more.addEventListener("click", () => load().catch(showError));
  await load();
  // Live: new calls at the top, without reloading. Only for the newest-first view.
  if ((params.get("sort") || "time") === "time") {
    poller = setInterval(async () => {
      try {
        const page = await api("requests", [...base, ["limit", "50"]]);
        const fresh = page.data.filter((r) => !seen.has(r.request_id));
        if (fresh.length && body.firstElementChild && !body.firstElementChild.dataset.id) body.replaceChildren();
        for (const r of fresh.reverse()) {
          seen.add(r.request_id);
          const row = requestRow(r, selected, onSelect);
          row.classList.add("new");
          body.prepend(row);
        }
        statusLine.textContent = "live · updated " + new Date().toLocaleTimeString();
      } catch (err) {
        statusLine.textContent = "live updates paused: " + err.message;
      }
    }, POLL_MS);
  }
}

// -- one request: prompt and completion rendered ----------------------------------------------------

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function sseEvents(text) {
  const events = [];
  for (const block of (text || "").split(/\r?\n\r?\n/)) {
    let name = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) continue;
    const joined = data.join("\n");
    events.push({ name, data: joined === "[DONE]" ? null : parseJSON(joined) });
  }
  return events;
}

function mediaThumb(url, label) {
  if (typeof url === "string" && url.startsWith("data:image/")) return h("img", { className: "thumb", src: url, alt: label || "image" });
  // Remote images are not fetched (the page loads nothing from elsewhere): show where it was.
  return h("div", { className: "tool-call" }, "[image] " + (typeof url === "string" ? url.slice(0, 200) : ""));
}

function partNodes(part) {
  if (typeof part === "string") return [h("div", { className: "text" }, part)];
  if (!part || typeof part !== "object") return [h("div", { className: "text" }, JSON.stringify(part))];
  if (typeof part.text === "string" && !part.functionCall) return [h("div", { className: "text" }, part.text)];
  const type = part.type;
  if (type === "image_url") return [mediaThumb(part.image_url && part.image_url.url)];
  if (type === "input_image") return [mediaThumb(part.image_url)];
  if (type === "image" && part.source) {
    const src = part.source.type === "base64" ? `data:${part.source.media_type};base64,${part.source.data}` : part.source.url;
    return [mediaThumb(src)];
  }
  if (part.inlineData) {
    const mime = part.inlineData.mimeType || "";
    return [mime.startsWith("image/") ? mediaThumb(`data:${mime};base64,${part.inlineData.data}`) : h("div", { className: "tool-call" }, `[${mime || "file"}]`)];
  }
  if (type === "input_audio") return [h("div", { className: "tool-call" }, "[audio]")];
  if (type === "tool_use" || part.functionCall) {
    const call = part.functionCall || part;
    return [h("div", { className: "tool-call" }, `tool call ${call.name}(${JSON.stringify(call.input ?? call.args ?? {}, null, 1)})`)];
  }
  if (type === "tool_result" || part.functionResponse) {
    const content = part.content ?? (part.functionResponse && part.functionResponse.response);
    return [h("div", { className: "tool-call" }, "tool result: " + (typeof content === "string" ? content : JSON.stringify(content, null, 1)))];
  }
  if (type === "thinking") return [h("div", { className: "text muted" }, part.thinking || "")];
  return [h("div", { className: "tool-call" }, JSON.stringify(part, null, 1))];
}

function contentNodes(content) {
  if (content === null || content === undefined) return [];
  if (Array.isArray(content)) return content.flatMap(partNodes);
  return partNodes(content);
}

function message(role, nodes) {
  const kind = role.startsWith("tool") ? "tool" : role === "model" ? "assistant" : role;
  return h("div", { className: "msg " + kind }, h("div", { className: "role" }, role), nodes);
}

function requestMessages(body) {
  const out = [];
  const system = body.system ?? body.instructions;
  if (system !== undefined) out.push(message("system", contentNodes(system)));
  const gemSystem = body.systemInstruction || body.system_instruction;
  if (gemSystem) out.push(message("system", contentNodes(gemSystem.parts)));
  const list = body.messages || body.contents || (Array.isArray(body.input) ? body.input : null);
  if (typeof body.input === "string") out.push(message("user", contentNodes(body.input)));
  for (const m of list || []) {
    if (m.type === "function_call") {
      out.push(message("assistant", [h("div", { className: "tool-call" }, `tool call ${m.name}(${m.arguments})`)]));
      continue;
    }
    if (m.type === "function_call_output") {
      out.push(message("tool", [h("div", { className: "tool-call" }, "tool result: " + m.output)]));
      continue;
    }
    const nodes = contentNodes(m.content ?? m.parts);
    for (const call of m.tool_calls || []) nodes.push(h("div", { className: "tool-call" }, `tool call ${call.function.name}(${call.function.arguments})`));
    out.push(message(m.role === "tool" ? `tool ${m.tool_call_id || ""}`.trim() : m.role || "user", nodes));
  }
  if (!out.length && typeof body.prompt === "string") out.push(message("prompt", contentNodes(body.prompt)));
  return out;
}

// The completion as one message, whatever the provider and whether or not it was streamed.
function completion(text) {
  const whole = parseJSON(text);
  const events = whole ? [{ name: null, data: whole }] : sseEvents(text);
  let content = "";
  const calls = new Map();
  const blocks = [];
  const call = (key) => {
    if (!calls.has(key)) calls.set(key, { name: "", args: "" });
    return calls.get(key);
  };
  for (const { name, data } of events) {
    if (!data) continue;
    if (data.choices) {
      for (const choice of data.choices) {
        const part = choice.message || choice.delta || {};
        if (typeof part.content === "string") content += part.content;
        if (typeof part.refusal === "string") content += part.refusal;
        if (typeof choice.text === "string") content += choice.text;
        for (const t of part.tool_calls || []) {
          const c = call(t.index ?? t.id);
          if (t.function && t.function.name) c.name += t.function.name;
          if (t.function && t.function.arguments) c.args += t.function.arguments;
        }
      }
    } else if (data.type === "message" && Array.isArray(data.content)) {
      blocks.push(...data.content);
    } else if (data.type === "content_block_start") {
      const block = data.content_block;
      if (block.type === "tool_use") call("a" + data.index).name = block.name;
      if (block.type === "text") content += block.text || "";
    } else if (data.type === "content_block_delta") {
      const d = data.delta;
      if (d.type === "text_delta") content += d.text;
      if (d.type === "input_json_delta") call("a" + data.index).args += d.partial_json;
    } else if (data.candidates) {
      for (const cand of data.candidates) for (const part of (cand.content && cand.content.parts) || []) {
        if (typeof part.text === "string") content += part.text;
        if (part.functionCall) blocks.push(part);
      }
    } else if (name === "response.output_text.delta" || data.type === "response.output_text.delta") {
      content += data.delta;
    } else if (Array.isArray(data.output) && data.object === "response") {
      for (const item of data.output) {
        for (const c of item.content || []) if (c.type === "output_text") content += c.text;
        if (item.type === "function_call") {
          const c = call(item.id);
          c.name = item.name;
          c.args = item.arguments;
        }
      }
    } else if (data.data && Array.isArray(data.data)) {
      content += `[${data.data.length} embedding(s)]`;
    }
  }
  const nodes = [];
  if (content) nodes.push(h("div", { className: "text" }, content));
  nodes.push(...blocks.flatMap(partNodes));
  for (const c of calls.values()) nodes.push(h("div", { className: "tool-call" }, `tool call ${c.name}(${c.args})`));
  return nodes.length ? message("assistant", nodes) : h("p", { className: "muted" }, "No completion text (see the raw view).");
}

function pretty(text) {
  const parsed = parseJSON(text);
  return parsed ? JSON.stringify(parsed, null, 2) : text;
}

function scoreControl(r) {
  const shown = h("span", { className: "scores", id: "score-list" });
  const render = (scores) => shown.replaceChildren(...Object.entries(scores).map(([k, v]) => h("span", { className: "pill" }, `${k}: ${v}`)));
  render(r.scores || {});
  const send = (path, payload) => post(`requests/${encodeURIComponent(r.request_id)}/${path}`, payload).then((res) => render(res.data.scores)).catch(showError);
  const comment = h("input", { className: "wide", placeholder: "comment (optional)", name: "comment" });
  const name = h("input", { placeholder: "score name", name: "score-name" });
  const value = h("input", { placeholder: "number or true/false", name: "score-value" });
  const addScore = () => {
    const raw = value.value.trim();
    const parsed = raw === "true" ? true : raw === "false" ? false : Number(raw);
    send("scores", { scores: { [name.value.trim()]: parsed } });
  };
  return h(
    "div",
    { className: "card" },
    h("h2", {}, "Feedback and scores"),
    h(
      "div",
      { className: "scores" },
      h("button", { type: "button", title: "good", "aria-label": "thumbs up", onclick: () => send("feedback", { rating: true, ...(comment.value ? { comment: comment.value } : {}) }) }, "Good"),
      h("button", { type: "button", title: "bad", "aria-label": "thumbs down", onclick: () => send("feedback", { rating: false, ...(comment.value ? { comment: comment.value } : {}) }) }, "Bad"),
      comment,
      name,
      value,
      h("button", { type: "button", className: "plain", onclick: addScore }, "Add score"),
      shown
    ),
    r.feedback_comment ? h("p", { className: "muted" }, "Comment: " + r.feedback_comment) : null
  );
}

// "#0 503 (waited 1.0 s) → #1 200": every provider call made for a request with retries or fallbacks.
function providerCalls(r) {
  const attempts = r.attempts ? parseJSON(r.attempts) : null;
  if (!Array.isArray(attempts)) return r.attempt_count > 1 ? String(r.attempt_count) : null;
  return attempts.map((a) => (a.target === null ? "" : `#${a.target} `) + (a.status || a.error_type) + (a.wait_ms ? ` (waited ${fmt.ms(a.wait_ms)})` : "")).join(" → ");
}

async function requestView(id) {
  const r = (await api("requests/" + encodeURIComponent(id))).data;
  const facts = [
    ["Id", r.request_id], ["Time", fmt.time(r.created_at)], ["Provider", r.provider], ["Endpoint", `${r.method} ${r.endpoint}`],
    ["Model", r.model], ["Response model", r.response_model], ["Status", r.status], ["Error", r.error_type],
    ["Tokens in / out", `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`], ["Cache read / write", `${fmt.int(r.cache_read_tokens)} / ${fmt.int(r.cache_write_tokens)}`],
    ["Reasoning tokens", fmt.int(r.reasoning_tokens)], ["Cost", `${fmt.cost(r.cost_usd)} (${r.cost_source})`], ["Latency", fmt.ms(r.latency_ms)],
    ["Time to first token", fmt.ms(r.ttft_ms)], ["relaylog overhead", fmt.ms(r.overhead_ms)], ["User", r.user_id], ["Prompt id", r.prompt_id], ["Key", r.key_id],
    ["Cache", r.cache_status], ["Provider calls", providerCalls(r)], ["Fallback entry", r.fallback_index],
    ["Parse note", r.parse_error],
  ];
  const dl = h("dl", { className: "facts" });
  for (const [k, v] of facts) if (v !== null && v !== undefined && v !== "–") dl.append(h("dt", {}, k), h("dd", {}, String(v)));
  if (r.session_id) dl.append(h("dt", {}, "Session"), h("dd", {}, h("a", { href: "#/sessions/" + encodeURIComponent(r.session_id) }, r.session_id), r.session_path ? " " + r.session_path : ""));
  for (const [k, v] of Object.entries(r.properties || {})) dl.append(h("dt", {}, "property " + k), h("dd", {}, v));
  const body = parseJSON(r.request_body || "");
  // On AWS a body too large for the answer comes as a link the browser can fetch itself.
  const missing = (what, url) => url ? h("p", {}, `The ${what} body is too large to show here: `, h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, "download it")) : h("p", { className: "muted" }, `${what[0].toUpperCase() + what.slice(1)} body not recorded.`);
  const conversation = h("div", { id: "conversation" }, body ? requestMessages(body) : r.request_body === null ? missing("request", r.request_body_url) : h("p", { className: "muted" }, "Request body is not JSON (see raw)."), r.response_body ? completion(r.response_body) : missing("response", r.response_body_url));
  const raw = h("div", { id: "raw", hidden: true }, h("h2", {}, "Request"), h("pre", { className: "raw" }, pretty(r.request_body || "")), h("h2", {}, "Response"), h("pre", { className: "raw" }, pretty(r.response_body || "")));
  const tabs = h("div", { className: "tabs" });
  for (const [label, pane] of [["Conversation", conversation], ["Raw", raw]]) {
    tabs.append(h("button", { type: "button", className: "plain" + (pane === conversation ? " active" : ""), onclick: (e) => {
      for (const b of tabs.children) b.classList.toggle("active", b === e.target);
      conversation.hidden = pane !== conversation;
      raw.hidden = pane !== raw;
    } }, label));
  }
  main.replaceChildren(h("h1", {}, "Request ", h("span", { className: "muted" }, fmt.short(r.request_id))), h("div", { className: "card" }, dl), scoreControl(r), h("div", { className: "card" }, tabs, conversation, raw));
}

// -- charts ---------------------------------------------------------------------------------------

const COLORS = ["#1f6feb", "#e36209", "#2da44e", "#a371f7", "#d1242f", "#0598bc", "#bf8700", "#6e7781", "#cf222e", "#1a7f37"];

const BUCKET_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };

// Every bucket start of the span, in the API's format, so quiet stretches show as zero, not as
// a line drawn straight across them.
function bucketTimes(data) {
  const step = BUCKET_MS[data.bucket];
  const end = data.until ? Date.parse(data.until) : Date.now();
  const times = [];
  for (let t = Math.floor(Date.parse(data.since) / step) * step; t < end && times.length <= 2000; t += step) {
    times.push(new Date(t).toISOString().replace(".000Z", "Z"));
  }
  return times;
}

// series: [{label, points: [{t, ...}]}]; additive: a bucket without points counts as 0.
function lineChart(title, series, value, format, times, additive) {
  const width = 560, height = 220, left = 60, bottom = 24, top = 10, right = 10;
  series = series.map((x) => {
    const at = new Map(x.points.map((p) => [p.t, p]));
    return { label: x.label, points: times.map((t) => at.get(t) || (additive ? { t, zero: true } : null)).filter(Boolean) };
  });
  const read = (p) => (p.zero ? 0 : value(p));
  const max = Math.max(0, ...series.flatMap((x) => x.points.map((p) => read(p) || 0)));
  const index = new Map(times.map((t, i) => [t, i]));
  const xs = (t) => left + (times.length < 2 ? (width - left - right) / 2 : (index.get(t) / (times.length - 1)) * (width - left - right));
  const ys = (v) => height - bottom - (max ? (v / max) * (height - top - bottom) : 0);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  svg.append(s("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }), s("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (const frac of [0, 0.5, 1]) svg.append(s("text", { x: left - 4, y: ys(max * frac) + 3, "text-anchor": "end" }, format(max * frac)));
  if (times.length) {
    svg.append(s("text", { x: left, y: height - 6 }, fmt.time(times[0])));
    svg.append(s("text", { x: width - right, y: height - 6, "text-anchor": "end" }, fmt.time(times[times.length - 1])));
  }
  series.forEach((x, i) => {
    const pts = x.points.filter((p) => read(p) !== null && read(p) !== undefined);
    const color = COLORS[i % COLORS.length];
    if (pts.length > 1) svg.append(s("polyline", { points: pts.map((p) => `${xs(p.t)},${ys(read(p))}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    // Dots only where there were calls, with the exact value on hover.
    for (const p of pts.filter((q) => !q.zero)) svg.append(s("circle", { cx: xs(p.t), cy: ys(read(p)), r: 2.5, fill: color }, s("title", {}, `${x.label} ${fmt.time(p.t)}: ${format(read(p))}`)));
  });
  const legend = h("div", { className: "legend" }, series.map((x, i) => {
    const swatch = h("i");
    swatch.style.background = COLORS[i % COLORS.length];
    return h("span", {}, swatch, x.label);
  }));
  return h("div", { className: "card chart", "data-chart": title }, h("h2", {}, title), svg, legend);
}

async function chartsView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", "24h");
  const by = h("select", { name: "by" }, ["", "model", "provider", "user", "session", "key", "status", "prompt"].map((v) => h("option", { value: v }, v || "(none)")));
  by.value = params.get("by") || "";
  const property = h("input", { name: "by_property", placeholder: "or property name", value: (params.get("by") || "").startsWith("property:") ? params.get("by").slice(9) : "" });
  const bucket = h("select", { name: "bucket" }, ["", "minute", "hour", "day"].map((v) => h("option", { value: v }, v || "auto")));
  bucket.value = params.get("bucket") || "";
  main.replaceChildren(
    h("h1", {}, "Charts"),
    filterBar(["since", "model", "provider", "user", "status", "property"], params, (next) => {
      const prop = next.get("by_property");
      next.delete("by_property");
      if (prop) next.set("by", "property:" + prop);
      go("charts", next);
    }, [h("label", {}, "Group by", by), h("label", {}, "Property", property), h("label", {}, "Bucket", bucket)])
  );
  const data = (await api("stats", [...filterPairs(params, ["since", "model", "provider", "user", "status", "property", "by", "bucket"])])).data;
  const t = data.total;
  const tiles = [["Requests", fmt.int(t.requests)], ["Errors", `${fmt.int(t.errors)} (${t.error_rate === null ? "–" : (t.error_rate * 100).toFixed(1) + "%"})`], ["Cost", fmt.cost(t.cost_usd)], ["Tokens in", fmt.int(t.input_tokens)], ["Tokens out", fmt.int(t.output_tokens)], ["Latency p50", fmt.ms(t.latency_p50_ms)], ["Latency p95", fmt.ms(t.latency_p95_ms)], ["Latency p99", fmt.ms(t.latency_p99_ms)], ["TTFT p50", fmt.ms(t.ttft_p50_ms)]];
  main.append(h("div", { className: "grid", id: "totals" }, tiles.map(([k, v]) => h("div", { className: "tile" }, h("span", {}, k), h("b", {}, v)))));
  if (t.cost_unknown || t.usage_unknown) main.append(h("p", { className: "muted" }, `${t.cost_unknown} call(s) without a known cost and ${t.usage_unknown} without usage are left out of the sums, not counted as 0.`));
  const grouped = data.by ? [...new Set(data.group_series.map((p) => p.key))].map((key) => ({ label: String(key ?? "(none)"), points: data.group_series.filter((p) => p.key === key) })) : [{ label: "all", points: data.series }];
  const times = bucketTimes(data);
  const latency = [["p50", "latency_p50_ms"], ["p95", "latency_p95_ms"], ["p99", "latency_p99_ms"]].map(([label, f]) => ({ label, points: data.series.map((p) => ({ t: p.t, v: p[f] })) }));
  main.append(
    h(
      "div",
      { className: "charts" },
      lineChart("Cost", grouped, (p) => p.cost_usd, fmt.cost, times, true),
      lineChart("Requests", grouped, (p) => p.requests, fmt.int, times, true),
      lineChart("Tokens (in + out)", grouped, (p) => p.input_tokens + p.output_tokens, fmt.int, times, true),
      lineChart("Latency percentiles", latency, (p) => p.v, fmt.ms, times, false),
      data.by ? lineChart("Latency p95 by group", grouped, (p) => p.latency_p95_ms, fmt.ms, times, false) : null
    )
  );
  if (data.by) {
    main.append(h("table", { id: "groups" }, h("thead", {}, h("tr", {}, h("th", {}, data.by), ["Requests", "Errors", "Cost", "p50", "p95", "p99"].map((x) => h("th", { className: "num" }, x)))), h("tbody", {}, data.groups.map((g) => h("tr", {}, h("td", {}, g.key ?? "(none)"), h("td", { className: "num" }, fmt.int(g.requests)), h("td", { className: "num" }, fmt.int(g.errors)), h("td", { className: "num" }, fmt.cost(g.cost_usd)), h("td", { className: "num" }, fmt.ms(g.latency_p50_ms)), h("td", { className: "num" }, fmt.ms(g.latency_p95_ms)), h("td", { className: "num" }, fmt.ms(g.latency_p99_ms)))))));
  }
}

// -- sessions, users, prompts ----------------------------------------------------------------------

function simpleTable(id, columns, rows, onRow) {
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, columns.map(([label, , num]) => h("th", { className: num ? "num" : null }, label)))),
    h("tbody", {}, rows.length ? rows.map((row) => h("tr", { onclick: onRow ? () => onRow(row) : null }, columns.map(([, get, num]) => h("td", { className: num ? "num" : null }, get(row))))) : h("tr", {}, h("td", { colspan: columns.length, className: "muted" }, "Nothing yet.")))
  );
}

async function pagedTable(view, path, params, filterNames, id, columns, onRow, extra) {
  main.replaceChildren(h("h1", {}, view[0].toUpperCase() + view.slice(1)), filterBar(filterNames, params, (next) => go(view, next), extra));
  const page = await api(path, [...filterPairs(params, [...filterNames, "sort"]), ["limit", "100"]]);
  main.append(simpleTable(id, columns, page.data, onRow));
  if (page.next_cursor) main.append(h("p", { className: "muted" }, "Showing the first 100; narrow the filters to see others."));
}

function sessionsView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", "7d");
  return pagedTable("sessions", "sessions", params, ["since", "user", "model"], "sessions", [
    ["Session", (s) => s.session_id], ["Name", (s) => s.session_name || "–"], ["Requests", (s) => fmt.int(s.requests), 1], ["Errors", (s) => fmt.int(s.errors), 1],
    ["Cost", (s) => fmt.cost(s.cost_usd), 1], ["Tokens", (s) => fmt.int(s.input_tokens + s.output_tokens), 1], ["Duration", (s) => fmt.ms(s.duration_ms), 1],
    ["Last active", (s) => fmt.time(s.last_at)], ["Users", (s) => s.users.join(", ")],
  ], (s) => go("sessions/" + encodeURIComponent(s.session_id)));
}

function treeNode(node) {
  const t = node.totals;
  const head = h("div", { className: "node-head" }, node.path, h("span", { className: "muted" }, `  ${t.requests} req · ${fmt.cost(t.cost_usd)} · ${fmt.int(t.input_tokens + t.output_tokens)} tokens`));
  const reqs = node.requests.map((r) => h("li", { className: "node-req", "data-id": r.request_id, onclick: () => go("requests/" + encodeURIComponent(r.request_id)) }, statusPill(r), `${fmt.time(r.created_at)}  ${r.model || ""}  ${fmt.cost(r.cost_usd)}  ${fmt.ms(r.latency_ms)}`));
  return h("li", { "data-path": node.path }, head, h("ul", {}, reqs, node.children.map(treeNode)));
}

async function sessionView(id) {
  const data = (await api("sessions/" + encodeURIComponent(id))).data;
  main.replaceChildren(
    h("h1", {}, "Session ", data.session_name ? `${data.session_name} ` : "", h("span", { className: "muted" }, data.session_id)),
    h("div", { className: "grid" }, [["Requests", fmt.int(data.requests)], ["Cost", fmt.cost(data.cost_usd)], ["Tokens", fmt.int(data.input_tokens + data.output_tokens)], ["Duration", fmt.ms(data.duration_ms)], ["Errors", fmt.int(data.errors)]].map(([k, v]) => h("div", { className: "tile" }, h("span", {}, k), h("b", {}, v)))),
    h("div", { className: "card tree", id: "session-tree" }, h("ul", {}, treeNode(data.tree)))
  );
}

function usersView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", "30d");
  const sort = h("select", { name: "sort" }, ["cost", "requests", "last_seen"].map((v) => h("option", { value: v }, v)));
  sort.value = params.get("sort") || "cost";
  return pagedTable("users", "users", params, ["since", "model", "provider"], "users", [
    ["User", (u) => u.user_id], ["Requests", (u) => fmt.int(u.requests), 1], ["Errors", (u) => fmt.int(u.errors), 1], ["Cost", (u) => fmt.cost(u.cost_usd), 1],
    ["Tokens in", (u) => fmt.int(u.input_tokens), 1], ["Tokens out", (u) => fmt.int(u.output_tokens), 1], ["First seen", (u) => fmt.time(u.first_seen)], ["Last seen", (u) => fmt.time(u.last_seen)],
  ], (u) => go("requests", new URLSearchParams({ user: u.user_id, since: params.get("since") })), [h("label", {}, "Sort", sort)]);
}

function promptsView() {
  const params = hashParams();
  if (!params.has("since")) params.set("since", "30d");
  return pagedTable("prompts", "prompts", params, ["since", "model"], "prompts", [
    ["Prompt id", (p) => p.prompt_id], ["Requests", (p) => fmt.int(p.requests), 1], ["Cost", (p) => fmt.cost(p.cost_usd), 1], ["First seen", (p) => fmt.time(p.first_seen)], ["Last seen", (p) => fmt.time(p.last_seen)],
  ], (p) => go("prompts/" + encodeURIComponent(p.prompt_id)));
}

function diffView(lines) {
  return h("div", { className: "diff", id: "diff" }, lines.map((l) => h("div", { className: l.op === "+" ? "add" : l.op === "-" ? "del" : null }, `${l.op} ${l.text}`)));
}

async function promptView(id) {
  const params = hashParams();
  const data = (await api("prompts/" + encodeURIComponent(id))).data;
  const versions = data.versions;
  const pick = (name, fallback) => {
    const select = h("select", { name }, versions.map((v) => h("option", { value: v.version }, "v" + v.version)));
    select.value = params.get(name) || String(fallback);
    return select;
  };
  const from = pick("from", Math.max(1, versions.length - 1));
  const to = pick("to", versions.length);
  const out = h("div");
  const compare = async () => {
    try {
      const diff = (await api(`prompts/${encodeURIComponent(id)}/diff`, [["from", from.value], ["to", to.value]])).data;
      out.replaceChildren(h("h2", {}, `v${diff.from.version} → v${diff.to.version}`), diffView(diff.lines));
    } catch (err) {
      showError(err);
    }
  };
  main.replaceChildren(
    h("h1", {}, "Prompt ", id),
    simpleTable("versions", [
      ["Version", (v) => "v" + v.version], ["Requests", (v) => fmt.int(v.requests), 1], ["Cost", (v) => fmt.cost(v.cost_usd), 1], ["p50", (v) => fmt.ms(v.latency_p50_ms), 1],
      ["p95", (v) => fmt.ms(v.latency_p95_ms), 1], ["First seen", (v) => fmt.time(v.first_seen)], ["Last seen", (v) => fmt.time(v.last_seen)], ["Template", (v) => v.template.split("\n").slice(0, 2).join(" ⏎ ").slice(0, 90)],
    ], versions),
    h("div", { className: "card filters" }, h("label", {}, "From", from), h("label", {}, "To", to), h("button", { type: "button", onclick: compare }, "Compare")),
    out
  );
  if (versions.length > 1) await compare();
  else out.replaceChildren(h("pre", { className: "raw" }, versions[0].template));
}

async function requestDiffView() {
  const params = hashParams();
  const data = (await api("diff", [["a", params.get("a")], ["b", params.get("b")]])).data;
  main.replaceChildren(h("h1", {}, `Prompt of ${fmt.short(data.a)} → ${fmt.short(data.b)}`), diffView(data.lines));
}

// -- routing --------------------------------------------------------------------------------------

async function route() {
  clearInterval(poller);
  poller = null;
  statusLine.textContent = "";
  const path = location.hash.replace(/^#\/?/, "").split("?")[0] || "requests";
  const [view, ...rest] = path.split("/");
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  main.replaceChildren(h("p", { className: "muted" }, "Loading…"));
  try {
    if (view === "requests" && id) await requestView(id);
    else if (view === "charts") await chartsView();
    else if (view === "sessions" && id) await sessionView(id);
    else if (view === "sessions") await sessionsView();
    else if (view === "users") await usersView();
    else if (view === "prompts" && id) await promptView(id);
    else if (view === "prompts") await promptsView();
    else if (view === "diff") await requestDiffView();
    else await requestsView();
  } catch (err) {
    if (main.firstElementChild && main.firstElementChild.textContent === "Loading…") main.replaceChildren();
    showError(err);
  }
}

window.addEventListener("hashchange", route);
route();
