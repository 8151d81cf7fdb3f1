// One request in a panel over the list that opened it (the requests table, a session tree): the list
// stays where it was; previous/next walk its rows ([data-id] elements, in page order); the URL's
// `open=ID` says which request is shown, so a link, a reload and the back button all keep it.
import { api, fmt, h, main, post, statusPill } from "./dom.js";
import { completion, offeredTools, parseJSON, pretty, requestMessages } from "./conversation.js";

const panel = h("aside", { id: "drawer", className: "drawer", hidden: true, "aria-label": "request" });
document.body.append(panel);
let shown = null; // the request id on show
let loadMore = null; // the list's "load more" (async), so next can go past the last loaded row

export function setLoadMore(fn) {
  loadMore = fn;
}

function hashWithOpen(id) {
  const [path, query] = location.hash.split("?");
  const params = new URLSearchParams(query || "");
  if (id) params.set("open", id);
  else params.delete("open");
  const text = params.toString();
  return (path || "#/requests") + (text ? "?" + text : "");
}

export function openRequest(id) {
  location.hash = hashWithOpen(id);
}

function closeRequest() {
  location.hash = hashWithOpen(null);
}

function listIds() {
  return [...new Set([...main.querySelectorAll("[data-id]")].map((el) => el.dataset.id))];
}

async function step(by) {
  let ids = listIds();
  let at = ids.indexOf(shown);
  if (by > 0 && at === ids.length - 1 && loadMore) {
    await loadMore();
    ids = listIds();
  }
  at = ids.indexOf(shown);
  const next = at < 0 ? null : ids[at + by];
  if (next) location.replace(hashWithOpen(next)); // walking the list does not fill the history
}

function markSelected() {
  for (const el of main.querySelectorAll(".selected[data-id]")) el.classList.remove("selected");
  for (const el of main.querySelectorAll(`[data-id="${CSS.escape(shown || "")}"]`)) {
    el.classList.add("selected");
    el.scrollIntoView({ block: "nearest" });
  }
}

document.addEventListener("keydown", (event) => {
  if (panel.hidden || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest && event.target.closest("input, textarea, select")) return;
  const action = { Escape: closeRequest, ArrowDown: () => step(1), j: () => step(1), ArrowUp: () => step(-1), k: () => step(-1) }[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

// Called by the router after every hash change: show, change or hide the panel.
export async function syncDrawer(id) {
  if (!id) {
    shown = null;
    panel.hidden = true;
    markSelected();
    return;
  }
  if (id === shown && !panel.hidden) {
    markSelected(); // the list under it may have been drawn again
    return;
  }
  shown = id;
  panel.hidden = false;
  markSelected();
  const ids = listIds();
  const at = ids.indexOf(id);
  const prev = h("button", { type: "button", className: "plain", title: "previous (↑ or k)", disabled: at <= 0, onclick: () => step(-1) }, "‹ Prev");
  const next = h("button", { type: "button", className: "plain", title: "next (↓ or j)", disabled: at < 0 || (at === ids.length - 1 && !loadMore), onclick: () => step(1) }, "Next ›");
  const close = h("button", { type: "button", className: "plain", title: "back to the list (Esc)", "aria-label": "close", onclick: closeRequest }, "✕");
  const title = h("h2", { title: id }, "Request ", h("code", {}, fmt.short(id)));
  const body = h("div", { className: "drawer-body" }, h("p", { className: "muted" }, "Loading…"));
  panel.replaceChildren(h("div", { className: "drawer-head" }, prev, next, title, h("span", { className: "grow" }), close), body);
  try {
    const r = (await api("requests/" + encodeURIComponent(id))).data;
    if (shown === id) body.replaceChildren(...requestDetail(r));
  } catch (err) {
    if (shown === id) body.replaceChildren(h("p", { className: "error", role: "alert" }, String(err.message || err)));
  }
}

// "#0 503 (waited 1.0 s) → #1 200": every provider call made for a request with retries or fallbacks.
function providerCalls(r) {
  const attempts = r.attempts ? parseJSON(r.attempts) : null;
  if (!Array.isArray(attempts)) return r.attempt_count > 1 ? String(r.attempt_count) : null;
  return attempts.map((a) => (a.target === null ? "" : `#${a.target} `) + (a.status || a.error_type) + (a.wait_ms ? ` (waited ${fmt.ms(a.wait_ms)})` : "")).join(" → ");
}

// Label, value pairs two to a line; the long ones (WIDE) take a line of their own.
const WIDE = new Set(["Id", "Endpoint", "Session", "Properties", "Provider calls", "Parse note"]);

function facts(r) {
  const rows = [
    ["Id", h("code", {}, r.request_id)], ["Endpoint", `${r.method} ${r.endpoint}`], ["Time", h("span", { title: r.created_at }, fmt.when(r.created_at))], ["Provider", r.provider],
    ["Model", r.response_model && r.response_model !== r.model ? `${r.model} → ${r.response_model}` : r.model],
    ["Status", r.error_type ? `${r.status} · ${r.error_type}` : String(r.status)], ["Stream", r.stream ? (r.provider === "bedrock" ? "yes (AWS event stream)" : "yes (SSE)") : "no"],
    ["Tokens in / out", `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`],
    ["Cache read / write", r.cache_read_tokens || r.cache_write_tokens ? `${fmt.int(r.cache_read_tokens)} / ${fmt.int(r.cache_write_tokens)}` : null],
    ["Reasoning tokens", r.reasoning_tokens ? fmt.int(r.reasoning_tokens) : null], ["Cost", `${fmt.cost(r.cost_usd)} (${r.cost_source})`],
    ["Latency", fmt.ms(r.latency_ms)], ["Time to first token", fmt.ms(r.ttft_ms)], ["relaylog overhead", fmt.ms(r.overhead_ms)],
    ["User", r.user_id], ["Prompt id", r.prompt_id], ["Key", r.key_id], ["Cache", r.cache_status], ["Provider calls", providerCalls(r)],
    ["Fallback entry", r.fallback_index], ["Parse note", r.parse_error],
  ];
  if (r.session_id) {
    const link = h("a", { href: "#/sessions/" + encodeURIComponent(r.session_id) }, r.session_name || r.session_id);
    rows.push(["Session", h("span", { title: r.session_id }, link, r.session_path ? "  " + r.session_path : "")]);
  }
  const props = Object.entries(r.properties || {});
  if (props.length) rows.push(["Properties", props.map(([k, v]) => h("span", { className: "pill" }, `${k}=${v}`))]);
  const dl = h("dl", { className: "facts" });
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "–") continue;
    const wide = WIDE.has(k) ? "wide" : null;
    dl.append(h("dt", { className: wide }, k), h("dd", { className: wide }, v));
  }
  return h("div", { className: "card" }, dl);
}

function toolsCard(body) {
  const tools = offeredTools(body);
  if (!tools.length) return null;
  return h(
    "div",
    { className: "card", id: "tools" },
    h("h3", {}, `Tools offered (${tools.length})`),
    tools.map((t) =>
      h(
        "details",
        { className: "tool" },
        h("summary", {}, h("code", {}, t.name || "?"), t.description ? h("span", { className: "muted" }, " — " + t.description) : null),
        t.parameters ? h("pre", { className: "raw" }, JSON.stringify(t.parameters, null, 2)) : h("p", { className: "muted" }, "No parameters.")
      )
    )
  );
}

function scoreCard(r) {
  const shown = h("span", { className: "scores", id: "score-list" });
  const good = h("button", { type: "button", className: "plain vote", "aria-label": "thumbs up", "aria-pressed": "false" }, "Good");
  const bad = h("button", { type: "button", className: "plain vote", "aria-label": "thumbs down", "aria-pressed": "false" }, "Bad");
  const render = (scores) => {
    shown.replaceChildren(...Object.entries(scores).map(([k, v]) => h("span", { className: "pill" }, `${k}: ${v}`)));
    for (const [button, value] of [[good, true], [bad, false]]) {
      button.setAttribute("aria-pressed", String(scores.feedback === value));
      button.classList.toggle("selected", scores.feedback === value);
    }
  };
  render(r.scores || {});
  const comment = h("input", { className: "w-comment", placeholder: "comment (optional)", name: "comment" });
  const name = h("input", { className: "w-name", placeholder: "score name", name: "score-name" });
  const value = h("input", { className: "w-value", placeholder: "0.8, true or false", name: "score-value" });
  const error = h("span", { className: "error", role: "alert" });
  const send = (path, payload) =>
    post(`requests/${encodeURIComponent(r.request_id)}/${path}`, payload)
      .then((res) => {
        error.textContent = "";
        render(res.data.scores);
      })
      .catch((err) => (error.textContent = String(err.message || err)));
  const vote = (rating) => send("feedback", { rating, ...(comment.value ? { comment: comment.value } : {}) });
  good.addEventListener("click", () => vote(true));
  bad.addEventListener("click", () => vote(false));
  const addScore = () => {
    const raw = value.value.trim();
    send("scores", { scores: { [name.value.trim()]: raw === "true" ? true : raw === "false" ? false : Number(raw) } });
  };
  return h(
    "div",
    { className: "card" },
    h("h3", {}, "Feedback and scores"),
    h("div", { className: "scores" }, good, bad, comment),
    h("div", { className: "scores" }, name, value, h("button", { type: "button", className: "plain", onclick: addScore }, "Add score"), error, shown),
    r.feedback_comment ? h("p", { className: "muted" }, "Comment: " + r.feedback_comment) : null
  );
}

function requestDetail(r) {
  const body = parseJSON(r.request_body || "");
  // On AWS a body too large for the answer comes as a link the browser can fetch itself.
  const missing = (what, url) =>
    url
      ? h("p", {}, `The ${what} body is too large to show here: `, h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, "download it"))
      : h("p", { className: "muted" }, `${what[0].toUpperCase() + what.slice(1)} body not recorded (Helicone-Omit-${what === "request" ? "Request" : "Response"}, or empty).`);
  const conversation = h(
    "div",
    { id: "conversation" },
    body ? requestMessages(body) : r.request_body === null ? missing("request", r.request_body_url) : h("p", { className: "muted" }, "Request body is not JSON (see raw)."),
    r.response_body ? completion(r.response_body) : missing("response", r.response_body_url)
  );
  const raw = h("div", { id: "raw", hidden: true }, h("h3", {}, "Request"), h("pre", { className: "raw" }, pretty(r.request_body || "")), h("h3", {}, r.stream ? "Response (server-sent events, as received)" : "Response"), h("pre", { className: "raw" }, pretty(r.response_body || "")));
  const tabs = h("div", { className: "tabs", role: "tablist" });
  for (const [label, pane] of [["Conversation", conversation], ["Raw", raw]]) {
    tabs.append(
      h("button", { type: "button", role: "tab", className: "plain" + (pane === conversation ? " active" : ""), onclick: (e) => {
        for (const b of tabs.children) b.classList.toggle("active", b === e.target);
        conversation.hidden = pane !== conversation;
        raw.hidden = pane !== raw;
      } }, label)
    );
  }
  const head = h("p", { className: "summary" }, statusPill(r), r.error_type ? h("span", { className: "error" }, r.error_type) : null, h("b", {}, r.model || "–"), h("span", { className: "pill" }, r.stream ? "stream" : "no stream"), h("span", { className: "muted" }, `${fmt.ms(r.latency_ms)} · ${fmt.cost(r.cost_usd)}`));
  return [head, facts(r), toolsCard(body), scoreCard(r), h("div", { className: "card" }, tabs, conversation, raw)].filter(Boolean);
}
