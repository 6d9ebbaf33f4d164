// Planning (the planning plugin): conflicts in the coming weeks and free slots for a duration.

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox, pager, table} = kit;
  const conflicts = h("div");
  const slots = h("div", {role: "status", "aria-live": "polite"});
  const minutes = h("input", {type: "number", min: "5", max: "1440", step: "5", value: "60"});
  const days = h("input", {type: "number", min: "1", max: "60", value: "7"});
  const calendars = h("select", {multiple: true, size: 3});
  const form = h("form", {class: "card stack"}, h("h3", {}, "Find free slots"),
    h("div", {class: "row"}, field("Duration (minutes)", minutes), field("Within the next days", days), field("Avoid the busy time of", calendars)),
    h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Propose")), slots);
  let all = [];
  const page = pager((cursor) => {
    const from = new Date();
    return api.get("conflicts", {from: from.toISOString(), to: new Date(+from + 28 * 86400000).toISOString(), limit: 50, cursor});
  }, (items, first) => {
    all = first ? items : all.concat(items);
    if (!all.length) {
      fill(conflicts, empty("No conflicts in the next four weeks."));
      return;
    }
    fill(conflicts, table([
      {label: "Overlap", cell: (c) => `${fmt.dateTime(c.overlap.start)} – ${fmt.time(c.overlap.end)}`},
      {label: "Events", cell: (c) => h("ul", {}, c.events.map((e) => h("li", {}, `${e.title} (${e.calendar_id}, ${e.mode})`)))},
      {label: "Reason", cell: (c) => c.reason},
    ], all));
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const chosen = [...calendars.selectedOptions].map((o) => o.value);
    const from = new Date();
    try {
      const res = await api.post("plan/proposals", {duration_minutes: Number(minutes.value),
        window: {from: from.toISOString(), to: new Date(+from + Number(days.value) * 86400000).toISOString()},
        calendars: chosen.length ? chosen : [...calendars.options].map((o) => o.value)});
      fill(slots, res.items.length ? h("ol", {}, res.items.map((s) => h("li", {},
        `${fmt.dateTime(s.start_utc)} – ${fmt.time(s.end_utc)}`, h("span", {class: "muted"}, ` ${s.explanation.join("; ")}`))))
        : empty("No free slot: try a longer window or a shorter duration."));
    } catch (err) {
      fill(slots, errorBox(err));
    }
  });
  fill(root, h("h3", {}, "Conflicts"), conflicts, page.el, form);
  try {
    const cals = (await api.get("calendars")).items || [];
    calendars.append(...cals.map((c) => h("option", {value: c.id}, c.name || c.id)));
  } catch (err) {
    slots.append(errorBox(err));
  }
  await page.reload();
}
