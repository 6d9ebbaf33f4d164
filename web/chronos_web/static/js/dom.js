// Building DOM from data: every value goes in as text (textContent or attribute values), never as markup.

/** h("button", {class: "x", onclick: fn}, "text", child) -> element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked" || key === "selected" || key === "disabled") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A labelled control: field("Title", h("input", {...})). */
export function field(label, control, {inline = false, hint} = {}) {
  if (!control.id) control.id = `f${++uid}`;
  const parts = [h("label", {for: control.id}, label), control];
  if (hint) parts.push(h("span", {class: "hint"}, hint));
  return h("div", {class: inline ? "field inline" : "field"}, inline ? parts.reverse() : parts);
}

export function empty(text) {
  return h("p", {class: "empty", role: "status"}, text);
}

/** An error as the user should see it: the problem's detail, or what went wrong. */
export function errorBox(err) {
  const detail = err && err.problem ? problemText(err.problem) : String((err && err.message) || err);
  return h("p", {class: "error", role: "alert"}, detail);
}

/**
 * Show a problem's field errors at their fields: each error whose JSON pointer starts with a control's
 * `name` (`/delay_seconds`, `/allowed_params_json/version`) is written under that control, which is marked
 * `aria-invalid`. Returns a box for the rest (the problem's detail and errors no field took), or null.
 */
export function fieldErrors(form, err) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const bad of form.querySelectorAll("[aria-invalid]")) {
    bad.removeAttribute("aria-invalid");
    bad.removeAttribute("aria-describedby");
  }
  if (!err) return null;
  const rest = [];
  const placed = [];
  for (const e of (err.problem && err.problem.errors) || []) {
    const name = (e.pointer || "").split("/")[1];
    const control = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (!control) {
      rest.push(e);
      continue;
    }
    const inner = e.pointer.split("/").slice(2).join("/");
    const note = h("p", {class: "error field-error", id: `f${++uid}-error`},
      `${inner ? `${inner}: ` : ""}${e.detail || e.message || "invalid"}`);
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", note.id);
    const box = control.closest(".field");
    if (box) box.append(note);
    else control.after(note);
    placed.push(control);
  }
  if (placed.length) placed[0].focus();
  if (placed.length && !rest.length) return h("p", {class: "error", role: "alert"}, "Please correct the marked fields.");
  return errorBox(placed.length ? {problem: {...err.problem, errors: rest}} : err);
}

export function problemText(problem) {
  const lines = [problem.detail || problem.title || `HTTP ${problem.status}`];
  for (const e of problem.errors || []) lines.push(`${e.pointer || ""} ${e.detail || e.message || ""}`.trim());
  return lines.join("\n");
}

const dateTime = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});
const timeOnly = new Intl.DateTimeFormat(undefined, {timeStyle: "short"});
const dayLabel = new Intl.DateTimeFormat(undefined, {weekday: "short", day: "numeric", month: "short"});
const dateOnly = new Intl.DateTimeFormat(undefined, {dateStyle: "medium"});

/** Dates in the browser's time zone. */
export const fmt = {
  dateTime: (iso) => (iso ? dateTime.format(new Date(iso)) : "—"),
  time: (iso) => (iso ? timeOnly.format(new Date(iso)) : ""),
  day: (d) => dayLabel.format(d),
  date: (d) => dateOnly.format(d),
};

export function statusBadge(status) {
  return h("span", {class: `status status-${status}`}, status);
}

/** A table from column specs [{label, cell: row => node|text}]. */
export function table(columns, rows, caption) {
  return h("div", {class: "tablewrap"},
    h("table", {},
      caption ? h("caption", {class: "muted"}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col"}, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {"data-label": c.label}, c.cell(row))))))));
}

/** "Load more" for keyset pages: calls load(cursor) -> {items, next_cursor}; render(items) appends. */
export function pager(load, render, label = "Load more") {
  let cursor = null;
  const status = h("span", {class: "muted", role: "status"});
  const button = h("button", {type: "button", hidden: true}, label);
  button.addEventListener("click", () => next());
  async function next(first = false) {
    button.disabled = true;
    try {
      const page = await load(first ? null : cursor);
      cursor = page.next_cursor || null;
      render(page.items || [], first);
      button.hidden = !cursor;
      status.textContent = "";
    } catch (err) {
      status.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  }
  return {el: h("div", {class: "row"}, button, status), reload: () => next(true)};
}

/** A compact JSON rendering for params and results. */
export function json(value) {
  return h("code", {}, value === null || value === undefined ? "" : JSON.stringify(value));
}
