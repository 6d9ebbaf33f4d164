// Webhooks and the outbox (the webhooks plugin): endpoints, deliveries, dead letters with replay.

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox, pager, statusBadge, table} = kit;
  const body = h("div");
  const tabs = [["endpoints", "Webhooks"], ["deliveries", "Deliveries"], ["dead", "Dead letters"]];
  const buttons = tabs.map(([id, label]) => h("button", {type: "button", "data-tab": id, onclick: () => show(id)}, label));
  fill(root, h("div", {class: "row", role: "group", "aria-label": "Outbox views"}, buttons), body);

  function show(id) {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.tab === id));
    if (id === "endpoints") endpoints();
    else deliveries(id === "dead");
  }

  function endpoints() {
    const list = h("div");
    const out = h("div", {role: "status"});
    const url = h("input", {type: "url", required: true, placeholder: "https://example.com/hook", autocomplete: "off"});
    const types = h("input", {type: "text", value: "*", autocomplete: "off"});
    const form = h("form", {class: "card stack"}, h("h3", {}, "Add a webhook"),
      h("div", {class: "row"}, field("URL", url), field("Event types (comma separated)", types)),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Add")), out);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const made = await api.post("webhooks", {url: url.value, event_types: types.value.split(",").map((t) => t.trim()).filter(Boolean)});
        fill(out, h("p", {}, "Signing secret (shown only now):"), h("p", {class: "secret", tabindex: "0"}, made.secret));
        draw();
      } catch (err) {
        fill(out, errorBox(err));
      }
    });
    fill(body, list, form);
    const act = (fn) => async () => {
      try {
        await fn();
        draw();
      } catch (err) {
        fill(out, errorBox(err));
      }
    };
    async function draw() {
      try {
        const page = await api.get("webhooks", {limit: 200});
        if (!page.items.length) {
          fill(list, empty("No webhooks: add an endpoint below to receive events and command results."));
          return;
        }
        fill(list, table([
          {label: "URL", cell: (w) => w.url},
          {label: "Events", cell: (w) => w.event_types.join(", ")},
          {label: "Status", cell: (w) => (w.enabled ? statusBadge("active") : h("span", {class: "error"}, `disabled ${w.disabled_reason || ""}`))},
          {label: "", cell: (w) => h("div", {class: "row"},
            h("button", {type: "button", "aria-label": `Send a test to ${w.url}`, onclick: act(() => api.post(`webhooks/${w.id}/test`))}, "Test"),
            h("button", {type: "button", "aria-label": `${w.enabled ? "Disable" : "Enable"} ${w.url}`,
              onclick: act(() => api.patch(`webhooks/${w.id}`, {enabled: !w.enabled}))}, w.enabled ? "Disable" : "Enable"),
            h("button", {type: "button", class: "danger", "aria-label": `Delete ${w.url}`, onclick: act(() => api.del(`webhooks/${w.id}`))}, "Delete"))},
        ], page.items));
      } catch (err) {
        fill(list, errorBox(err));
      }
    }
    draw();
  }

  function deliveries(dead) {
    const status = h("select", {}, h("option", {value: ""}, "Any status"), ["pending", "delivered", "dead"].map((s) => h("option", {value: s}, s)));
    const list = h("div");
    const out = h("div", {role: "status"});
    let all = [];
    const page = pager((cursor) => (dead ? api.get("outbox/dead", {limit: 50, cursor})
      : api.get("outbox/deliveries", {status: status.value || undefined, limit: 50, cursor})), (items, first) => {
      all = first ? items : all.concat(items);
      if (!all.length) {
        fill(list, empty(dead ? "No dead letters: deliveries that run out of retries show here, ready to replay." : "No deliveries yet."));
        return;
      }
      fill(list, table([
        {label: "ID", cell: (d) => String(d.id)},
        {label: "Event", cell: (d) => d.event_type},
        {label: "Target", cell: (d) => d.target},
        {label: "Status", cell: (d) => statusBadge(d.status)},
        {label: "Attempts", cell: (d) => String(d.attempts)},
        {label: "Last answer", cell: (d) => [d.last_status_code ? String(d.last_status_code) : "", d.last_error ? h("span", {class: "error"}, ` ${d.last_error}`) : ""]},
        {label: "Created", cell: (d) => fmt.dateTime(d.created_at)},
        {label: "", cell: (d) => (d.status === "dead" ? h("button", {type: "button", "aria-label": `Replay delivery ${d.id}`, onclick: async () => {
          try {
            await api.post(`outbox/dead/${d.id}/replay`);
            fill(out, h("p", {class: "ok"}, `Delivery ${d.id} queued again.`));
            page.reload();
          } catch (err) {
            fill(out, errorBox(err));
          }
        }}, "Replay") : "")},
      ], all));
    });
    status.addEventListener("change", () => page.reload());
    fill(body, dead ? null : h("div", {class: "toolbar"}, field("Status", status)), out, list, page.el);
    page.reload();
  }

  show("endpoints");
}
