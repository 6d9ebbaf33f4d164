// Events: week, day and agenda views over GET /api/v1/events, one page at a time.

const DAY = 86400000;
const PAGE = 200;

function startOfDay(d) {
  const x = new Date(d);
  x.setHours(0, 0, 0, 0);
  return x;
}
function startOfWeek(d) {
  const x = startOfDay(d);
  x.setDate(x.getDate() - ((x.getDay() + 6) % 7)); // Monday
  return x;
}
function addDays(d, n) {
  const x = new Date(d);
  x.setDate(x.getDate() + n);
  return x;
}
function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
/** A datetime-local value (browser time) as ISO 8601 with its offset. */
function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : null;
}
function eventStart(ev) {
  return ev.all_day ? new Date(`${ev.start_date}T00:00:00`) : new Date(ev.start_utc);
}

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox} = kit;
  const state = {view: "week", anchor: new Date(), calendar: "", tags: "", text: "", completed: true, selected: null};
  let calendars = [];

  const view = h("select", {name: "view"},
    h("option", {value: "week"}, "Week"), h("option", {value: "day"}, "Day"), h("option", {value: "agenda"}, "Agenda"));
  const calendar = h("select", {name: "calendar"}, h("option", {value: ""}, "All calendars"));
  const tags = h("input", {type: "text", name: "tags", placeholder: "team, work", autocomplete: "off"});
  const text = h("input", {type: "search", name: "text", placeholder: "Search titles and notes", autocomplete: "off"});
  const completed = h("input", {type: "checkbox", name: "completed", checked: true});
  const prev = h("button", {type: "button", "aria-label": "Previous"}, "‹ Prev");
  const today = h("button", {type: "button"}, "Today");
  const next = h("button", {type: "button", "aria-label": "Next"}, "Next ›");
  const create = h("button", {type: "button", class: "primary", hidden: true}, "New event");
  const range = h("p", {class: "muted", "aria-live": "polite"});
  const list = h("div", {class: "events-body"});
  const more = h("button", {type: "button", hidden: true}, "Load more");
  const status = h("div", {role: "status"});
  const details = h("aside", {class: "details card", "aria-label": "Event details", hidden: true});

  fill(root,
    h("form", {class: "toolbar", role: "search", onsubmit: (e) => e.preventDefault()},
      field("View", view), field("Calendar", calendar), field("Tags", tags), field("Text", text),
      field("Include completed", completed, {inline: true}),
      h("div", {class: "row"}, prev, today, next, create)),
    range,
    h("div", {class: "grid2"}, h("div", {}, list, h("div", {class: "row"}, more, status)), details));

  let cursor = null;
  let items = [];
  let seq = 0;
  // event id -> conflicts it is part of (GET /conflicts of the planning plugin; absent: 404, hints off)
  let conflicts = new Map();
  let planningOn = true;

  function window_() {
    if (state.view === "agenda") return {from: startOfDay(state.anchor), to: null};
    const from = state.view === "week" ? startOfWeek(state.anchor) : startOfDay(state.anchor);
    return {from, to: addDays(from, state.view === "week" ? 7 : 1)};
  }

  function query(cur) {
    const {from, to} = window_();
    const tagList = state.tags.split(",").map((t) => t.trim().replace(/^#/, "")).filter(Boolean);
    return {
      from: from.toISOString(),
      to: to ? to.toISOString() : undefined,
      calendar_id: state.calendar || undefined,
      tag: tagList.length ? tagList : undefined,
      text: state.text || undefined,
      include_completed: String(state.completed),
      limit: state.view === "agenda" ? 50 : PAGE,
      cursor: cur || undefined,
    };
  }

  async function load(reset) {
    const mine = ++seq;
    if (reset) {
      cursor = null;
      items = [];
    }
    more.disabled = true;
    status.replaceChildren();
    try {
      const [page] = await Promise.all([api.get("events", query(cursor)), reset ? loadConflicts(mine) : null]);
      if (mine !== seq) return;
      items = items.concat(page.items);
      cursor = page.next_cursor || null;
      draw();
    } catch (err) {
      if (mine === seq) status.replaceChildren(errorBox(err));
    } finally {
      more.disabled = false;
      more.hidden = !cursor;
    }
  }

  async function loadConflicts(mine) {
    if (!planningOn || state.view === "agenda") return;
    const {from, to} = window_();
    try {
      const page = await api.get("conflicts", {from: from.toISOString(), to: to.toISOString(), limit: 500});
      if (mine !== seq) return;
      conflicts = new Map();
      for (const c of page.items) {
        for (const id of c.event_ids) conflicts.set(id, [...(conflicts.get(id) || []), c]);
      }
    } catch (err) {
      // No planning plugin (404) or no right to it (403): no hints.
      if (err.status === 404 || err.status === 403) planningOn = false;
    }
  }

  function chip(ev) {
    const clash = conflicts.has(ev.id);
    const cls = ["ev", ev.all_done && ev.sub_tasks.length ? "done" : "", clash ? "conflict" : ""];
    const when = ev.all_day ? "all day" : `${fmt.time(ev.start_utc)}–${fmt.time(ev.end_utc)}`;
    const checklist = ev.sub_tasks.length ? ` · ${ev.sub_tasks.filter((s) => s.done).length}/${ev.sub_tasks.length}` : "";
    return h("button", {type: "button", class: cls.join(" ").trim(), "data-event-id": ev.id, onclick: () => select(ev.id)},
      h("span", {class: "t"}, when + checklist + (clash ? " · ⚠ conflict" : "")), ev.title);
  }

  function draw() {
    const {from, to} = window_();
    range.textContent =
      state.view === "agenda" ? `From ${fmt.date(from)}` : `${fmt.date(from)} – ${fmt.date(addDays(to, -1))}`;
    if (!items.length) {
      fill(list, empty(state.text || state.tags || state.calendar
        ? "No events match these filters. Clear the filters or pick another week."
        : "No events in this range. Move to another week, sync a calendar (Sync runs), or create a local event."));
      return;
    }
    if (state.view === "agenda") {
      fill(list, h("ul", {class: "agenda"}, items.map((ev) =>
        h("li", {}, h("span", {class: "muted"}, fmt.dateTime(ev.start_utc || ev.start_date)), " ", chip(ev)))));
      return;
    }
    const days = state.view === "week" ? 7 : 1;
    const todayKey = startOfDay(new Date()).getTime();
    const cols = [];
    for (let i = 0; i < days; i++) {
      const day = addDays(from, i);
      const end = addDays(day, 1);
      const evs = items.filter((ev) => {
        const s = eventStart(ev);
        const e = ev.all_day ? new Date(`${ev.end_date}T00:00:00`) : new Date(ev.end_utc);
        return s < end && (e > day || +s === +day);
      });
      cols.push(h("section", {class: day.getTime() === todayKey ? "daycol today" : "daycol", "aria-label": fmt.day(day)},
        h("h3", {}, fmt.day(day)), evs.length ? evs.map(chip) : h("p", {class: "muted"}, "—")));
    }
    fill(list, h("div", {class: state.view === "day" ? "week day" : "week"}, cols));
  }

  async function select(id) {
    state.selected = id;
    details.hidden = false;
    fill(details, h("p", {class: "muted"}, "Loading…"));
    try {
      const ev = await api.get(`events/${id}`);
      const [links, notes, related] = await Promise.all([
        api.get("links", {from: ev.start_utc || undefined, to: ev.end_utc || undefined, limit: 50}).catch(() => ({items: []})),
        api.get("notes", {from: ev.start_utc || undefined, to: ev.end_utc || undefined, limit: 50}).catch(() => ({items: []})),
        api.get(`events/${id}/links`).catch(() => ({items: []})),
      ]);
      // Event-to-event links name the other event by id: fetch the titles of the first few.
      const linked = await Promise.all((related.items || []).slice(0, 10).map(async (l) => {
        const other = l.direction === "outgoing" ? l.to_event_id : l.from_event_id;
        const target = await api.get(`events/${other}`).catch(() => null);
        return {id: other, type: l.type, direction: l.direction, title: target ? target.title : `#${other}`};
      }));
      showDetails(ev, links.items.filter((l) => l.source && l.source.event_id === id),
        notes.items.filter((n) => n.source && n.source.event_id === id), linked);
    } catch (err) {
      fill(details, errorBox(err));
    }
  }

  function showDetails(ev, links, notes, related) {
    const cal = calendars.find((c) => c.id === ev.calendar_id);
    const writable = cal && !cal.read_only;
    const checklist = h("ul", {class: "checklist"}, ev.sub_tasks.map((st) => {
      const box = h("input", {type: "checkbox", checked: st.done, "data-subtask": st.id});
      box.addEventListener("change", async () => {
        box.disabled = true;
        try {
          const updated = await api.patch(`events/${ev.id}`, {sub_tasks: [{id: st.id, done: box.checked}]});
          const i = items.findIndex((x) => x.id === ev.id);
          if (i >= 0) items[i] = updated;
          draw();
          showDetails(updated, links, notes, related);
        } catch (err) {
          box.checked = !box.checked;
          details.append(errorBox(err));
        } finally {
          box.disabled = false;
        }
      });
      return h("li", {}, kit.field(st.text, box, {inline: true}));
    }));
    const clashes = conflicts.get(ev.id) || [];
    const others = clashes.flatMap((c) => c.events.filter((o) => o.id !== ev.id).map((o) => ({...o, reason: c.reason})));
    const proposals = h("div");
    const heading = h("h3", {tabindex: "-1"}, ev.title);
    fill(details,
      heading,
      others.length ? h("div", {class: "card", role: "note"},
        h("p", {class: "error"}, "Conflicts with:"),
        h("ul", {}, others.map((o) => h("li", {},
          h("button", {type: "button", onclick: () => select(o.id)}, o.title), ` ${fmt.dateTime(o.start_utc)} (${o.reason})`))),
        h("button", {type: "button", onclick: () => showProposals(ev, proposals)}, "Propose free slots"), proposals) : null,
      h("dl", {},
        h("dt", {}, "When"), h("dd", {}, ev.all_day ? `${ev.start_date} (all day)` : `${fmt.dateTime(ev.start_utc)} – ${fmt.time(ev.end_utc)}`),
        h("dt", {}, "Calendar"), h("dd", {}, `${ev.calendar_id} (${ev.source})`),
        ev.location ? [h("dt", {}, "Location"), h("dd", {}, ev.location)] : null,
        h("dt", {}, "Status"), h("dd", {}, ev.status),
        ev.tags.length ? [h("dt", {}, "Tags"), h("dd", {}, ev.tags.map((t) => h("span", {class: "tag"}, `#${t}`)))] : null,
        ev.description ? [h("dt", {}, "Description"), h("dd", {}, ev.description)] : null),
      ev.sub_tasks.length ? [h("h3", {}, "Checklist"), checklist] : null,
      links.length ? [h("h3", {}, "Links"), h("ul", {}, links.map((l) =>
        h("li", {}, /^https?:\/\//i.test(l.url) ? h("a", {href: l.url, rel: "noopener noreferrer", target: "_blank"}, l.title || l.url) : l.url)))] : null,
      notes.length ? [h("h3", {}, "Notes"), h("ul", {}, notes.map((n) => h("li", {}, n.content)))] : null,
      related.length ? [h("h3", {}, "Linked events"), h("ul", {}, related.map((r) =>
        h("li", {}, `${r.type} ${r.direction === "outgoing" ? "→" : "←"} `,
          h("button", {type: "button", onclick: () => select(r.id)}, r.title))))] : null,
      h("div", {class: "row"},
        writable ? h("button", {type: "button", onclick: () => editor(ev)}, "Edit") : h("span", {class: "muted"}, "Read-only calendar"),
        h("button", {type: "button", onclick: () => close()}, "Close")));
    if (!details.contains(document.activeElement) || document.activeElement.tagName !== "INPUT") {
      heading.focus({preventScroll: true});
      details.scrollIntoView({block: "nearest"});
    }
  }

  /** Close the details and give the focus back to the event's chip. */
  function close() {
    details.hidden = true;
    const chipEl = list.querySelector(`[data-event-id="${state.selected}"]`);
    if (chipEl) chipEl.focus();
  }
  details.addEventListener("keydown", (e) => {
    if (e.key === "Escape") close();
  });

  async function showProposals(ev, el) {
    fill(el, h("p", {class: "muted"}, "Looking for free slots…"));
    try {
      const res = await api.get(`events/${ev.id}/proposals`);
      if (!res.items.length) {
        fill(el, empty("No free slot in the planning window: widen the working hours or move another event."));
        return;
      }
      fill(el, h("ul", {class: "checklist"}, res.items.map((slot) => h("li", {},
        `${fmt.dateTime(slot.start_utc)} – ${fmt.time(slot.end_utc)} `,
        res.movable ? h("button", {type: "button", onclick: async () => {
          try {
            await api.post(`events/${ev.id}/reschedule`, {proposal: slot.id});
            await load(true);
            select(ev.id);
          } catch (err) {
            el.append(errorBox(err));
          }
        }}, "Move here") : h("span", {class: "muted"}, "(from an external calendar: not moved)")))));
    } catch (err) {
      fill(el, errorBox(err));
    }
  }

  function editor(ev) {
    const writable = calendars.filter((c) => !c.read_only);
    if (!ev && !writable.length) {
      fill(details, empty("No local calendar is configured: add one under events.local_calendars."));
      details.hidden = false;
      return;
    }
    const title = h("input", {type: "text", required: true, value: ev ? ev.title : ""});
    const start = h("input", {type: "datetime-local", required: true, value: localInput(ev ? ev.start_utc : new Date(Date.now() + 3600000).toISOString())});
    const end = h("input", {type: "datetime-local", value: localInput(ev ? ev.end_utc : new Date(Date.now() + 7200000).toISOString())});
    const location = h("input", {type: "text", value: ev ? ev.location || "" : ""});
    const description = h("textarea", {rows: 4}, ev ? ev.description || "" : "");
    const cal = h("select", {}, writable.map((c) => h("option", {value: c.id}, c.name || c.id)));
    const out = h("div", {role: "status"});
    const form = h("form", {class: "stack"},
      h("h3", {}, ev ? "Edit event" : "New event"),
      field("Title", title), field("Start", start), field("End", end), field("Location", location),
      field("Description", description, {hint: "#tags, [ ] checklist items, URL: and NOTIZ: lines work here"}),
      ev ? null : field("Calendar", cal),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, ev ? "Save" : "Create"),
        h("button", {type: "button", onclick: () => (ev ? select(ev.id) : (details.hidden = true))}, "Cancel")),
      out);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        let saved;
        if (ev) {
          saved = await api.patch(`events/${ev.id}`, {title: title.value, location: location.value,
            description: description.value, start_utc: isoFromLocal(start.value), ...(end.value ? {end_utc: isoFromLocal(end.value)} : {})});
        } else {
          const made = await api.post("events", {calendar_id: cal.value, title: title.value, location: location.value,
            description: description.value, start: isoFromLocal(start.value), end: isoFromLocal(end.value)});
          saved = made.event || made;
        }
        await load(true);
        if (saved && saved.id) select(saved.id);
      } catch (err) {
        out.replaceChildren(errorBox(err));
      }
    });
    details.hidden = false;
    fill(details, form);
    title.focus();
  }

  const reload = () => load(true);
  let timer = null;
  view.addEventListener("change", () => { state.view = view.value; reload(); });
  calendar.addEventListener("change", () => { state.calendar = calendar.value; reload(); });
  completed.addEventListener("change", () => { state.completed = completed.checked; reload(); });
  for (const [input, key] of [[tags, "tags"], [text, "text"]]) {
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state[key] = input.value.trim(); reload(); }, 300);
    });
  }
  const step = (n) => { state.anchor = addDays(state.anchor, n * (state.view === "day" ? 1 : 7)); reload(); };
  prev.addEventListener("click", () => step(-1));
  next.addEventListener("click", () => step(1));
  today.addEventListener("click", () => { state.anchor = new Date(); reload(); });
  more.addEventListener("click", () => load(false));
  create.addEventListener("click", () => editor(null));

  // The first week first; the calendars (with their event counts) once it is on screen.
  await load(true);
  await api.get("calendars").then((res) => {
    calendars = res.items || [];
    calendar.append(...calendars.map((c) => h("option", {value: c.id}, `${c.name || c.id} (${c.event_count})`)));
    create.hidden = !calendars.some((c) => !c.read_only);
  }).catch(() => {});
  return () => clearTimeout(timer);
}
