// Plugins: what is installed and enabled, with the records each contributes.

export async function render(root, kit) {
  const {api, h, fill, empty, statusBadge, table} = kit;
  const list = await api.get("plugins");
  if (!list.length) {
    fill(root, empty("No plugins: the kernel runs alone (CHRONOS_NO_PLUGINS or plugins.enabled)."));
    return;
  }
  const records = (p) => Object.entries(p.records || {}).filter(([, v]) => v.length).map(([k, v]) => `${k}: ${v.join(", ")}`);
  fill(root, table([
    {label: "Plugin", cell: (p) => p.name},
    {label: "Distribution", cell: (p) => `${p.distribution || ""} ${p.version || ""}`},
    {label: "Status", cell: (p) => [statusBadge(p.status), p.error ? h("p", {class: "error"}, p.error) : null]},
    {label: "Contributes", cell: (p) => h("ul", {}, records(p).map((r) => h("li", {}, r)))},
    {label: "Routes", cell: (p) => String(p.routes.length)},
  ], list));
}
