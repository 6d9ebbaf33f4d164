// The dashboard shell: sign-in, the panel list (from what the key may see and the enabled plugins), routing.
import {ApiError, Unreachable, api, on, request, session} from "./api.js";
import {errorBox, field, fieldErrors, fill, fmt, h, empty, json, pager, statusBadge, table} from "./dom.js";

/** Builtin panels: each probes one list route; 403 (scope) or 404 (plugin disabled) hides it. */
const PANELS = [
  {id: "events", title: "Events", probe: ["events", {limit: 1, direction: "future"}], module: "./panels/events.js"},
  {id: "commands", title: "Commands", probe: ["commands", {limit: 1}], module: "./panels/commands.js"},
  {id: "templates", title: "Templates", probe: ["templates", {limit: 1}], module: "./panels/templates.js"},
  {id: "mail", title: "Mail", probe: ["mail/deliveries", {limit: 1}], module: "./panels/mail.js"},
  {id: "sync", title: "Sync runs", probe: ["sync/runs", {limit: 1}], module: "./panels/sync.js"},
  {id: "planning", title: "Planning", probe: ["conflicts", {limit: 1}], module: "./panels/planning.js"},
  {id: "outbox", title: "Webhooks", probe: ["webhooks", {limit: 1}], module: "./panels/outbox.js"},
  {id: "backups", title: "Backups", probe: ["backups", {limit: 1}], module: "./panels/backups.js"},
  {id: "keys", title: "Keys", probe: ["keys"], module: "./panels/keys.js"},
  {id: "audit", title: "Audit log", probe: ["audit", {limit: 1}], module: "./panels/audit.js"},
  {id: "plugins", title: "Plugins", probe: ["plugins"], module: "./panels/plugins.js"},
];

/** What a panel module receives besides its root element. */
const kit = {api, request, h, fill, fmt, field, fieldErrors, empty, errorBox, json, pager, statusBadge, table, ApiError};

const $ = (id) => document.getElementById(id);
let visible = [];
let cleanup = null;
let plugins = [];
let accepted = false;

async function probe(panel) {
  try {
    await api.get(...panel.probe);
    return true;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return false;
    throw err;
  }
}

/**
 * Panels other plugins contribute (a web_assets record with a panel.js module), for any signed-in key:
 * GET /dashboard/panels lists the modules; each panel's own probe hides it from a key without its scope.
 */
async function contributed() {
  let listed;
  try {
    listed = await api.get("dashboard/panels");
  } catch (err) {
    if (err instanceof ApiError) return []; // a server without the list: builtin panels only
    throw err;
  }
  const found = await Promise.all(listed.map(async ({name, module}) => {
    try {
      const mod = await import(module);
      if (typeof mod.render !== "function") return null;
      if (mod.probe && !(await probe({probe: mod.probe}))) return null;
      return {id: `plugin-${name}`, title: String(mod.title || name), mod};
    } catch (err) {
      if (err instanceof Unreachable || (err instanceof ApiError && err.status === 401)) throw err;
      return null; // a module that fails to load or probe is left out, not the dashboard
    }
  }));
  return found.filter(Boolean);
}

/** After sign-in: the asked-for panel as soon as its own probe answers, the full navigation when all have. */
async function start() {
  const asked = location.hash.replace(/^#\/?/, "").split("?")[0] || "events";
  const probes = PANELS.map(probe);
  Promise.all(probes).catch(() => {}); // a refusal is handled below, once
  const index = PANELS.findIndex((p) => p.id === asked);
  let shown = null;
  // The first answer tells a refused key (401: the caller's error) from a valid one.
  if (index >= 0 && (await probes[index])) {
    accepted = true;
    visible = [PANELS[index]];
    drawNav(true);
    showShell();
    shown = route();
  }
  const extra = contributed();
  extra.catch(() => {}); // a refusal is handled below, once
  const allowed = await Promise.all(probes);
  accepted = true;
  visible = PANELS.filter((_, i) => allowed[i]).concat(await extra);
  // Enabled plugin names are admin knowledge (GET /plugins); other keys get an empty set.
  plugins = visible.some((p) => p.id === "plugins") ? await api.get("plugins") : [];
  kit.plugins = new Set(plugins.filter((p) => p.status === "enabled").map((p) => p.name));
  drawNav();
  showShell();
  if (shown) {
    await shown;
    markCurrent(visible.find((p) => p.id === asked));
  } else {
    await route();
  }
}

/** The navigation; `partial` while the other panels' probes are still out (aria-busy). */
function drawNav(partial = false) {
  if (partial) $("nav").setAttribute("aria-busy", "true");
  else $("nav").removeAttribute("aria-busy");
  fill($("nav-list"), visible.map((p) => h("li", {}, h("a", {href: `#/${p.id}`, "data-panel": p.id}, p.title))));
}

function showShell() {
  $("signin").hidden = true;
  $("shell").hidden = false;
}

function markCurrent(panel) {
  for (const a of document.querySelectorAll("#nav-list a")) {
    if (a.dataset.panel === (panel && panel.id)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (!session.key || $("shell").hidden) return;
  const id = location.hash.replace(/^#\/?/, "").split("?")[0];
  const panel = visible.find((p) => p.id === id) || visible[0];
  markCurrent(panel);
  $("nav").classList.remove("open");
  $("nav-toggle").setAttribute("aria-expanded", "false");
  if (cleanup) cleanup();
  cleanup = null;
  const main = $("main");
  if (!panel) {
    fill(main, empty("This key may see no panel. Ask an administrator for a key with more scopes."));
    return;
  }
  document.title = `${panel.title} · Chronos`;
  const root = h("section", {"aria-labelledby": `h-${panel.id}`, "data-panel": panel.id});
  root.append(h("h2", {id: `h-${panel.id}`}, panel.title));
  fill(main, root);
  try {
    const mod = panel.mod || (await import(panel.module));
    const body = h("div");
    root.append(body);
    const stop = await mod.render(body, kit);
    cleanup = typeof stop === "function" ? stop : null;
  } catch (err) {
    root.append(errorBox(err));
  }
}

function showSignin(message) {
  if (cleanup) cleanup();
  cleanup = null;
  $("shell").hidden = true;
  fill($("main"));
  $("signin").hidden = false;
  const error = $("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("signin-key").value = "";
  $("signin-key").focus();
}

function signOut(message) {
  session.clear();
  showSignin(message);
}

async function signIn(event) {
  event.preventDefault();
  const key = $("signin-key").value.trim();
  const error = $("signin-error");
  if (!key) {
    error.textContent = "Enter an API key.";
    error.hidden = false;
    return;
  }
  try {
    accepted = false;
    session.set(key);
    $("signin-key").value = "";
    await start();
  } catch (err) {
    session.clear();
    showSignin();
    error.textContent =
      err instanceof ApiError && err.status === 401
        ? `This key was refused: ${err.message}`
        : err instanceof Unreachable
          ? "The server is unreachable; try again in a moment."
          : err.message;
    error.hidden = false;
  }
}

function boot() {
  $("signin-form").addEventListener("submit", signIn);
  // The skip link moves the focus only: following "#main" would change the route.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("nav-toggle").addEventListener("click", () => {
    const open = $("nav").classList.toggle("open");
    $("nav-toggle").setAttribute("aria-expanded", String(open));
  });
  window.addEventListener("hashchange", route);
  on("unauthorized", (err) => {
    // Before any answer was accepted, the sign-in form reports the refusal itself.
    if (accepted) signOut(`Your key is no longer accepted (${err.message}). Sign in again.`);
  });
  on("offline", () => {
    $("banner").hidden = false;
  });
  on("online", () => {
    $("banner").hidden = true;
    if (session.key && $("shell").hidden) start().catch(() => {});
    else route();
  });
  if (session.key) {
    start().catch((err) => {
      if (err instanceof Unreachable) return; // the banner shows; "online" starts again
      if (err instanceof ApiError && err.status === 401) signOut(`Your key is no longer accepted (${err.message}). Sign in again.`);
      else showSignin(err.message);
    });
  } else {
    showSignin();
  }
}

boot();
