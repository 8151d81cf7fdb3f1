// relaylog dashboard: plain JavaScript modules, no build step; the one third-party file is uPlot
// (uPlot.iife.min.js, MIT, see uPlot.LICENSE), shipped in the package like the rest.
import { h, main, NeedKey, saveKey, statusLine } from "./dom.js";
import { syncDrawer } from "./drawer.js";
import { chartsView } from "./charts.js";
import { requestsView } from "./requests.js";
import { promptsView, promptView, requestDiffView, sessionsView, sessionView, usersView } from "./views.js";

let poller = null;
let rendered = null; // the view on the page, as "view|id|query without open="

function askForKey(rejected) {
  const form = document.getElementById("key-form").content.firstElementChild.cloneNode(true);
  if (rejected) {
    form.querySelector("h2").textContent = "That key was rejected";
    form.querySelector("p").textContent = "relaylog did not accept it: it is not one of its keys, or it was revoked (relaylog keys list). Paste another; it stays in this browser only.";
    form.classList.add("rejected");
    form.querySelector("p").setAttribute("role", "alert");
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey(form.elements.key.value.trim());
    rendered = null;
    route();
  });
  main.replaceChildren(form);
}

function showError(err) {
  rendered = null;
  if (err instanceof NeedKey) return askForKey(err.rejected);
  main.append(h("p", { className: "error card", role: "alert" }, String(err.message || err)));
}

function render(view, id) {
  if (view === "charts") return chartsView();
  if (view === "sessions" && id) return sessionView(id);
  if (view === "sessions") return sessionsView();
  if (view === "users") return usersView();
  if (view === "prompts" && id) return promptView(id);
  if (view === "prompts") return promptsView();
  if (view === "diff") return requestDiffView();
  return requestsView();
}

async function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [view, ...rest] = (path || "requests").split("/");
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const params = new URLSearchParams(query || "");
  if (view === "requests" && id) {
    // Old links to one request: the list with that request open.
    location.replace("#/requests?" + new URLSearchParams({ since: "", open: id }).toString());
    return;
  }
  const open = params.get("open");
  params.delete("open");
  const key = `${view}|${id || ""}|${params.toString()}`;
  if (key !== rendered) {
    clearInterval(poller);
    poller = null;
    statusLine.textContent = "";
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === (view || "requests"));
    main.replaceChildren(h("p", { className: "muted" }, "Loading…"));
    rendered = key;
    try {
      poller = (await render(view, id)) || null;
    } catch (err) {
      if (main.firstElementChild && main.firstElementChild.textContent === "Loading…") main.replaceChildren();
      showError(err);
      syncDrawer(null);
      return;
    }
  }
  syncDrawer(open);
}

window.addEventListener("hashchange", route);
route();
