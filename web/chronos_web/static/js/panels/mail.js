// Mail deliveries: status filter, details, one page at a time.

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox, pager, statusBadge, table} = kit;
  const status = h("select", {}, h("option", {value: ""}, "Any status"),
    ["queued", "sent", "retrying", "failed"].map((s) => h("option", {value: s}, s)));
  const body = h("div");
  const details = h("div");
  let all = [];
  async function show(id) {
    try {
      const d = await api.get(`mail/deliveries/${id}`);
      fill(details, h("div", {class: "card details"}, h("h3", {}, d.subject),
        h("dl", {}, Object.entries(d).filter(([, v]) => typeof v !== "object" || v === null).map(([k, v]) =>
          [h("dt", {}, k), h("dd", {}, v === null ? "—" : String(v))]))));
    } catch (err) {
      fill(details, errorBox(err));
    }
  }
  const page = pager((cursor) => api.get("mail/deliveries", {status: status.value || undefined, limit: 50, cursor}), (items, first) => {
    all = first ? items : all.concat(items);
    if (!all.length) {
      fill(body, empty("No deliveries yet: send a test from a template in Templates, or POST /api/v1/mail/send."));
      return;
    }
    fill(body, table([
      {label: "Subject", cell: (d) => h("button", {type: "button", class: "ev", onclick: () => show(d.id)}, d.subject)},
      {label: "To", cell: (d) => d.to.join(", ")},
      {label: "Status", cell: (d) => statusBadge(d.status)},
      {label: "Attempts", cell: (d) => String(d.attempts)},
      {label: "Template", cell: (d) => d.template_name || ""},
      {label: "Last SMTP answer", cell: (d) => (d.last_smtp_code ? `${d.last_smtp_code} ${d.last_smtp_text || ""}` : "")},
      {label: "Created", cell: (d) => fmt.dateTime(d.created_at)},
    ], all));
  });
  status.addEventListener("change", () => page.reload());
  fill(root, h("div", {class: "toolbar"}, field("Status", status)), body, page.el, details);
  await page.reload();
}
