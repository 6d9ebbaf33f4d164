// Keys (admin): list, create (the secret is shown once), revoke.

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox, statusBadge, table} = kit;
  const list = h("div");
  const out = h("div", {role: "status"});
  const name = h("input", {type: "text", required: true, autocomplete: "off"});
  const systems = h("input", {type: "text", placeholder: "web-1, cache-2", autocomplete: "off"});
  const expires = h("select", {}, h("option", {value: ""}, "never"), h("option", {value: String(86400)}, "1 day"),
    h("option", {value: String(30 * 86400)}, "30 days"), h("option", {value: String(365 * 86400)}, "1 year"));
  const scopeBoxes = h("fieldset", {class: "row"}, h("legend", {}, "Scopes"));
  const form = h("form", {class: "card stack"}, h("h3", {}, "Create a key"),
    h("div", {class: "row"}, field("Name", name), field("Command systems (optional)", systems), field("Expires", expires)),
    scopeBoxes, h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Create key")), out);
  fill(root, list, form);

  try {
    const scopes = await api.get("scopes");
    const names = Array.isArray(scopes) ? scopes.map((s) => s.name || s) : Object.keys(scopes.scopes || scopes);
    for (const s of names) scopeBoxes.append(kit.field(s, h("input", {type: "checkbox", value: s, name: "scope"}), {inline: true}));
  } catch (err) {
    scopeBoxes.append(errorBox(err));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const chosen = [...scopeBoxes.querySelectorAll("input:checked")].map((b) => b.value);
    try {
      const key = await api.post("keys", {name: name.value, scopes: chosen,
        systems: systems.value.split(",").map((s) => s.trim()).filter(Boolean),
        ...(expires.value ? {expires_in_seconds: Number(expires.value)} : {})});
      const secret = h("p", {class: "secret", tabindex: "0", "aria-label": "The new key's secret"}, key.secret);
      fill(out, h("p", {}, "Copy the secret now: it is shown only once."), secret);
      name.value = "";
      draw();
    } catch (err) {
      fill(out, errorBox(err));
    }
  });

  async function draw() {
    try {
      const res = await api.get("keys");
      const items = Array.isArray(res) ? res : res.items || [];
      if (!items.length) {
        fill(list, empty("No stored keys (the bootstrap key from CHRONOS_ADMIN_KEY is not listed): create one below."));
        return;
      }
      fill(list, table([
        {label: "Name", cell: (k) => k.name},
        {label: "ID", cell: (k) => h("code", {}, k.id)},
        {label: "Scopes", cell: (k) => k.scopes.join(", ")},
        {label: "Systems", cell: (k) => (k.systems || []).join(", ")},
        {label: "Status", cell: (k) => statusBadge(k.status)},
        {label: "Last used", cell: (k) => fmt.dateTime(k.last_used_at)},
        {label: "Expires", cell: (k) => (k.expires_at ? fmt.dateTime(k.expires_at) : "never")},
        {label: "", cell: (k) => (k.status === "active" && k.id !== "bootstrap"
          ? h("button", {type: "button", class: "danger", "aria-label": `Revoke key ${k.name}`, onclick: async () => {
            try {
              await api.del(`keys/${k.id}`);
              draw();
            } catch (err) {
              fill(out, errorBox(err));
            }
          }}, "Revoke") : "")},
      ], items));
    } catch (err) {
      fill(list, errorBox(err));
    }
  }
  await draw();
}
