// Sessions (a tree by session path), users, prompts with their versions, and prompt diffs.
import { api, clipped, filterBar, filterPairs, fmt, go, h, hashParams, main, statusPill } from "./dom.js";
import { openRequest } from "./drawer.js";

// columns: [label, value(row), numeric]; values that can be long come through clipped().
function simpleTable(id, columns, rows, onRow) {
  return h(
    "table",
    { id, className: "list" },
    h("thead", {}, h("tr", {}, columns.map(([label, , num]) => h("th", { className: num ? "num" : null }, label)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows.map((row) => h("tr", { onclick: onRow ? () => onRow(row) : null }, columns.map(([, get, num]) => h("td", { className: num ? "num" : null }, get(row)))))
        : h("tr", {}, h("td", { colspan: columns.length, className: "muted" }, "Nothing in this range. Widen the time range, or send calls with the Helicone headers that fill these columns."))
    )
  );
}

async function pagedTable(view, path, params, filterNames, id, columns, onRow, extra, since) {
  if (!params.has("since")) params.set("since", since[0]);
  main.replaceChildren(h("div", { className: "title" }, h("h1", {}, view[0].toUpperCase() + view.slice(1))), filterBar(filterNames, params, (next) => go(view, next), extra, since));
  const page = await api(path, [...filterPairs(params, [...filterNames, "sort"]), ["limit", "100"]]);
  main.append(h("div", { className: "table-wrap" }, simpleTable(id, columns, page.data, onRow)));
  if (page.next_cursor) main.append(h("p", { className: "muted" }, "Showing the first 100; narrow the filters to see others."));
}

const RANGES = ["15m", "1h", "24h", "7d", "30d", ""];

export function sessionsView() {
  const params = hashParams();
  return pagedTable("sessions", "sessions", params, ["since", "user", "model"], "sessions", [
    ["Session", (s) => clipped(s.session_id, 24)], ["Name", (s) => clipped(s.session_name, 40)], ["Requests", (s) => fmt.int(s.requests), 1], ["Errors", (s) => fmt.int(s.errors), 1],
    ["Cost", (s) => fmt.cost(s.cost_usd), 1], ["Tokens", (s) => fmt.int(s.input_tokens + s.output_tokens), 1], ["Duration", (s) => fmt.duration(s.duration_ms), 1],
    ["Last active", (s) => fmt.time(s.last_at)], ["Users", (s) => clipped(s.users.join(", "), 30)],
  ], (s) => go("sessions/" + encodeURIComponent(s.session_id)), [], ["7d", RANGES]);
}

function treeNode(node) {
  const t = node.totals;
  const head = h("div", { className: "node-head" }, node.path, h("span", { className: "muted" }, `  ${t.requests} req · ${fmt.cost(t.cost_usd)} · ${fmt.int(t.input_tokens + t.output_tokens)} tokens`));
  const reqs = node.requests.map((r) =>
    h("li", { className: "node-req", "data-id": r.request_id, onclick: () => openRequest(r.request_id) }, statusPill(r), h("code", {}, fmt.short(r.request_id)), ` ${fmt.time(r.created_at)}  ${r.model || ""}  ${fmt.cost(r.cost_usd)}  ${fmt.ms(r.latency_ms)}`, r.error_type ? h("span", { className: "error" }, "  " + r.error_type) : null)
  );
  return h("li", { "data-path": node.path }, head, h("ul", {}, reqs, node.children.map(treeNode)));
}

export async function sessionView(id) {
  const data = (await api("sessions/" + encodeURIComponent(id))).data;
  main.replaceChildren(
    h("div", { className: "title" }, h("h1", {}, "Session ", data.session_name ? `${data.session_name} ` : "", h("span", { className: "muted", title: data.session_id }, fmt.short(data.session_id) + (data.session_id.length > 8 ? "…" : "")))),
    h("div", { className: "grid" }, [["Requests", fmt.int(data.requests)], ["Cost", fmt.cost(data.cost_usd)], ["Tokens", fmt.int(data.input_tokens + data.output_tokens)], ["Duration", fmt.duration(data.duration_ms)], ["Errors", fmt.int(data.errors)]].map(([k, v]) => h("div", { className: "tile" }, h("span", {}, k), h("b", {}, v)))),
    h("div", { className: "card tree", id: "session-tree" }, h("ul", {}, treeNode(data.tree)))
  );
}

export function usersView() {
  const params = hashParams();
  const sort = h("select", { name: "sort" }, ["cost", "requests", "last_seen"].map((v) => h("option", { value: v }, v)));
  sort.value = params.get("sort") || "cost";
  return pagedTable("users", "users", params, ["since", "model", "provider"], "users", [
    ["User", (u) => clipped(u.user_id, 40)], ["Requests", (u) => fmt.int(u.requests), 1], ["Errors", (u) => fmt.int(u.errors), 1], ["Cost", (u) => fmt.cost(u.cost_usd), 1],
    ["Tokens in", (u) => fmt.int(u.input_tokens), 1], ["Tokens out", (u) => fmt.int(u.output_tokens), 1], ["First seen", (u) => fmt.time(u.first_seen)], ["Last seen", (u) => fmt.time(u.last_seen)],
  ], (u) => go("requests", new URLSearchParams({ user: u.user_id, since: params.get("since") ?? "30d" })), [h("label", {}, "Sort", sort)], ["30d", RANGES]);
}

export function promptsView() {
  const params = hashParams();
  return pagedTable("prompts", "prompts", params, ["since", "model"], "prompts", [
    ["Prompt id", (p) => clipped(p.prompt_id, 60)], ["Requests", (p) => fmt.int(p.requests), 1], ["Cost", (p) => fmt.cost(p.cost_usd), 1], ["First seen", (p) => fmt.time(p.first_seen)], ["Last seen", (p) => fmt.time(p.last_seen)],
  ], (p) => go("prompts/" + encodeURIComponent(p.prompt_id)), [], ["30d", RANGES]);
}

function diffView(lines) {
  return h("div", { className: "diff", id: "diff" }, lines.map((l) => h("div", { className: l.op === "+" ? "add" : l.op === "-" ? "del" : null }, `${l.op} ${l.text}`)));
}

export async function promptView(id) {
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
      out.replaceChildren(h("p", { className: "error", role: "alert" }, String(err.message || err)));
    }
  };
  main.replaceChildren(
    h("div", { className: "title" }, h("h1", {}, "Prompt ", id)),
    h("div", { className: "table-wrap" }, simpleTable("versions", [
      ["Version", (v) => "v" + v.version], ["Requests", (v) => fmt.int(v.requests), 1], ["Cost", (v) => fmt.cost(v.cost_usd), 1], ["p50", (v) => fmt.ms(v.latency_p50_ms), 1],
      ["p95", (v) => fmt.ms(v.latency_p95_ms), 1], ["First seen", (v) => fmt.time(v.first_seen)], ["Last seen", (v) => fmt.time(v.last_seen)], ["Template", (v) => clipped(v.template.split("\n").slice(0, 2).join(" ⏎ "), 90)],
    ], versions)),
    h("div", { className: "card filters" }, h("label", {}, "From", from), h("label", {}, "To", to), h("button", { type: "button", onclick: compare }, "Compare")),
    out
  );
  if (versions.length > 1) await compare();
  else out.replaceChildren(h("pre", { className: "raw" }, versions[0].template));
}

export async function requestDiffView() {
  const params = hashParams();
  const data = (await api("diff", [["a", params.get("a")], ["b", params.get("b")]])).data;
  main.replaceChildren(h("div", { className: "title" }, h("h1", {}, `Prompt of ${fmt.short(data.a)} → ${fmt.short(data.b)}`)), diffView(data.lines));
}
