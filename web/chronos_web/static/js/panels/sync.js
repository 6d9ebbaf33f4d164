// Sync runs: per-calendar health, "sync now", and the run history one page at a time.

export async function render(root, kit) {
  const {api, h, fill, fmt, empty, errorBox, pager, statusBadge, table} = kit;
  const health = h("div");
  const out = h("div", {role: "status", "aria-live": "polite"});
  const runs = h("div");
  const now = h("button", {type: "button", class: "primary"}, "Sync all now");
  fill(root, h("div", {class: "row"}, now), out, h("h3", {}, "Calendars"), health, h("h3", {}, "Runs"), runs);

  async function sync(body, label) {
    out.replaceChildren();
    try {
      await api.post("events/sync", body);
      out.replaceChildren(h("p", {class: "ok"}, `Sync of ${label} started; its run appears below.`));
      setTimeout(() => { drawHealth(); page.reload(); }, 1200);
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  now.addEventListener("click", () => sync({}, "every calendar"));

  async function drawHealth() {
    try {
      const cals = (await api.get("calendars")).items || [];
      if (!cals.length) {
        fill(health, empty("No calendars configured: add one in the ics (or another source's) section of the configuration."));
        return;
      }
      fill(health, table([
        {label: "Calendar", cell: (c) => `${c.name || c.id} (${c.source})`},
        {label: "Last sync", cell: (c) => fmt.dateTime(c.last_sync_at)},
        {label: "Status", cell: (c) => (c.last_sync_status ? statusBadge(c.last_sync_status) : "never")},
        {label: "Last error", cell: (c) => (c.last_error ? h("span", {class: "error"}, c.last_error) : "")},
        {label: "Events", cell: (c) => String(c.event_count)},
        {label: "", cell: (c) => (c.configured
          ? h("button", {type: "button", "aria-label": `Sync ${c.id} now`, onclick: () => sync({source: c.source, calendar_id: c.id}, c.id)}, "Sync now")
          : "")},
      ], cals));
    } catch (err) {
      fill(health, errorBox(err));
    }
  }

  const body = h("div");
  let all = [];
  const page = pager((cursor) => api.get("sync/runs", {limit: 25, cursor}), (items, first) => {
    all = first ? items : all.concat(items);
    if (!all.length) {
      fill(body, empty("No sync runs yet: press “Sync all now”."));
      return;
    }
    fill(body, table([
      {label: "Run", cell: (r) => String(r.id)},
      {label: "Calendar", cell: (r) => `${r.calendar_id} (${r.source})`},
      {label: "Trigger", cell: (r) => r.trigger},
      {label: "Status", cell: (r) => statusBadge(r.status)},
      {label: "Started", cell: (r) => fmt.dateTime(r.started_at)},
      {label: "Duration", cell: (r) => (r.duration_ms === null ? "" : `${r.duration_ms} ms`)},
      {label: "Added / updated / deleted", cell: (r) => `${r.added} / ${r.updated} / ${r.deleted}${r.not_modified ? " (not modified)" : ""}`},
      {label: "Error", cell: (r) => (r.error ? h("span", {class: "error"}, r.error) : "")},
    ], all));
  });
  fill(runs, body, page.el);
  await Promise.all([drawHealth(), page.reload()]);
}
