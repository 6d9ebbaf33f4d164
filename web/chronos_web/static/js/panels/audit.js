// The audit log with filters, one page at a time.

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, json, pager, table} = kit;
  const entity = h("input", {type: "text", placeholder: "command, event, api_key…", autocomplete: "off"});
  const action = h("input", {type: "text", placeholder: "create, retry, manual_complete…", autocomplete: "off"});
  const actor = h("input", {type: "text", placeholder: "key id or cli", autocomplete: "off"});
  const since = h("input", {type: "datetime-local"});
  const body = h("div");
  let all = [];
  const page = pager((cursor) => api.get("audit", {
    entity: entity.value.trim() || undefined, action: action.value.trim() || undefined, actor: actor.value.trim() || undefined,
    since: since.value ? new Date(since.value).toISOString() : undefined, limit: 50, cursor,
  }), (items, first) => {
    all = first ? items : all.concat(items);
    if (!all.length) {
      fill(body, empty("No audit entries match: clear the filters."));
      return;
    }
    fill(body, table([
      {label: "When", cell: (a) => fmt.dateTime(a.at)},
      {label: "Actor", cell: (a) => a.actor || ""},
      {label: "Entity", cell: (a) => `${a.entity} ${a.entity_id || ""}`},
      {label: "Action", cell: (a) => a.action},
      {label: "Change", cell: (a) => json(a.change)},
      {label: "IP", cell: (a) => a.ip || ""},
    ], all));
  });
  const form = h("form", {class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); page.reload(); }},
    field("Entity", entity), field("Action", action), field("Actor", actor), field("Since", since),
    h("button", {type: "submit"}, "Filter"));
  fill(root, form, body, page.el);
  await page.reload();
}
