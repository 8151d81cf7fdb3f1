// Building blocks every view uses: elements, number and time formats, the API client, filters.
// Every value from the API reaches the page through textContent (never innerHTML), so a prompt can
// never become markup.

export const main = document.getElementById("main");
export const statusLine = document.getElementById("status");

export function h(tag, attrs, ...children) {
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

const missing = (n) => n === null || n === undefined;
const pad = (n) => String(n).padStart(2, "0");
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

export const fmt = {
  int: (n) => (missing(n) ? "–" : Math.round(n).toLocaleString("en-US")),
  // $0.000014, never 1.4e-05: two significant digits below a cent.
  cost: (n) => {
    if (missing(n)) return "–";
    if (n === 0) return "$0";
    if (n >= 1) return "$" + n.toFixed(2);
    if (n >= 0.01) return "$" + n.toFixed(4);
    return "$" + n.toFixed(Math.min(12, 1 - Math.floor(Math.log10(n)))).replace(/0+$/, "");
  },
  ms: (n) => (missing(n) ? "–" : n === 0 ? "0 ms" : n >= 10000 ? (n / 1000).toFixed(1) + " s" : n >= 1000 ? (n / 1000).toFixed(2) + " s" : n >= 10 ? Math.round(n) + " ms" : n.toFixed(1) + " ms"),
  pct: (n) => (missing(n) ? "–" : (n * 100).toFixed(n < 0.1 && n > 0 ? 1 : 0) + "%"),
  // Local time: today as 14:03:07, earlier as Nov 26 14:03.
  time: (iso) => {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date();
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return d.toDateString() === today.toDateString() ? `${clock}:${pad(d.getSeconds())}` : `${MONTHS[d.getMonth()]} ${d.getDate()} ${clock}`;
  },
  // The whole local date and time, e.g. 26 Nov 2026, 14:03:07.
  when: (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" }) : "–"),
  duration: (ms) => {
    if (missing(ms) || ms < 60e3) return fmt.ms(ms);
    const minutes = Math.floor(ms / 60e3);
    return minutes < 60 ? `${minutes} min ${Math.round((ms % 60e3) / 1000)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  },
  short: (id) => (id ? id.slice(0, 8) : "–"),
};

// A long value cut to its start, the whole of it on hover.
export function clipped(value, length) {
  if (missing(value) || value === "") return h("span", { className: "muted" }, "–");
  const text = String(value);
  return h("span", { title: text }, text.length > length ? text.slice(0, length) + "…" : text);
}

export function isError(r) {
  return r.status >= 400 || r.status === 0 || Boolean(r.error_type);
}

export function statusPill(r) {
  return h("span", { className: "pill " + (isError(r) ? "err" : "ok"), title: r.error_type ? `${r.status} ${r.error_type}` : null }, String(r.status));
}

// -- the API ---------------------------------------------------------------------------------------

const API = new URL("../api/v1/", document.baseURI).pathname;
const KEY = "relaylog-key";

export class NeedKey extends Error {
  constructor(message, rejected) {
    super(message);
    this.rejected = rejected; // a key was sent and refused, rather than none sent
  }
}

export async function api(path, params, init) {
  const url = new URL(API + path, location.origin);
  for (const [name, value] of params || []) if (value !== "" && value !== null && value !== undefined) url.searchParams.append(name, value);
  const headers = { ...(init && init.headers) };
  const key = localStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(url, { ...init, headers });
  const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
  if (response.status === 401) {
    if (key) localStorage.removeItem(KEY);
    throw new NeedKey(body.error.message, Boolean(key));
  }
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

export function post(path, payload) {
  return api(path, [], { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
}

export function saveKey(key) {
  localStorage.setItem(KEY, key);
}

// -- filters shared by the requests, charts, sessions and users views -------------------------------

export const FILTERS = [
  ["since", "Since", "select", ["15m", "1h", "24h", "7d", "30d", ""]],
  ["model", "Model"],
  ["provider", "Provider"],
  ["user", "User"],
  ["session", "Session"],
  ["prompt", "Prompt id"],
  ["status", "Status", "select", ["", "ok", "error"]],
  ["property", "Property name=value", "wide"],
  ["score", "Score (name>=x)"],
  ["search", "Search bodies", "wide"],
];

const CHOICE_LABELS = { "": "any", auto: "fit the data" };

export function hashParams() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

// names: which filters; since: [default, choices] for this view.
export function filterBar(names, params, onApply, extra, since) {
  const form = h("form", { className: "filters card", "aria-label": "filters" });
  for (const [name, label, kind, choices] of FILTERS.filter((f) => names.includes(f[0]))) {
    let input;
    if (kind === "select") {
      const options = name === "since" && since ? since[1] : choices;
      input = h("select", { name }, options.map((c) => h("option", { value: c }, name === "since" && c === "" ? "all" : CHOICE_LABELS[c] ?? c)));
      input.value = params.get(name) ?? (name === "since" && since ? since[0] : "");
    } else {
      input = h("input", { name, value: params.get(name) || "", className: kind === "wide" ? "wide" : null });
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

export function filterPairs(params, names) {
  return names.filter((n) => params.has(n)).map((n) => [n, params.get(n)]);
}

export function go(view, params) {
  const query = params && params.toString();
  location.hash = "#/" + view + (query ? "?" + query : "");
}
