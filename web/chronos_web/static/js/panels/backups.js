// Backups (the backups plugin): start one, follow it, verify, download, delete.

export async function render(root, kit) {
  const {api, request, h, fill, fmt, empty, errorBox, statusBadge, table} = kit;
  const list = h("div");
  const out = h("div", {role: "status", "aria-live": "polite"});
  const start = h("button", {type: "button", class: "primary"}, "Back up now");
  fill(root, h("div", {class: "row"}, start), out, list);
  let timer = null;

  const act = (fn, done) => async () => {
    try {
      const res = await fn();
      if (done) fill(out, h("p", {class: "ok"}, done(res)));
      draw();
    } catch (err) {
      fill(out, errorBox(err));
    }
  };
  start.addEventListener("click", act(() => api.post("backups"), (b) => `Backup ${b.id} started.`));

  async function download(b) {
    try {
      const blob = await request(`backups/${encodeURIComponent(b.id)}/download`, {raw: true});
      const a = h("a", {href: URL.createObjectURL(blob), download: b.file || `${b.id}.tar`});
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (err) {
      fill(out, errorBox(err));
    }
  }

  async function draw() {
    clearTimeout(timer);
    try {
      const page = await api.get("backups", {limit: 100});
      if (!page.items.length) {
        fill(list, empty("No backups yet: press “Back up now”, or schedule them in the backups settings."));
        return;
      }
      fill(list, table([
        {label: "Backup", cell: (b) => b.id},
        {label: "Status", cell: (b) => [statusBadge(b.status), b.error ? h("span", {class: "error"}, ` ${b.error}`) : ""]},
        {label: "Taken", cell: (b) => fmt.dateTime(b.created_at)},
        {label: "Size", cell: (b) => (b.size === null ? "" : `${(b.size / 2 ** 20).toFixed(1)} MB`)},
        {label: "Encrypted", cell: (b) => (b.encrypted ? "yes" : "no")},
        {label: "Verified", cell: (b) => (b.verified ? "yes" : "no")},
        {label: "", cell: (b) => (b.status === "complete" ? h("div", {class: "row"},
          h("button", {type: "button", "aria-label": `Verify ${b.id}`,
            onclick: act(() => api.post(`backups/${encodeURIComponent(b.id)}/verify`), (v) => (v.ok ? `${b.id} verified.` : `${b.id} failed: ${v.error}`))}, "Verify"),
          h("button", {type: "button", "aria-label": `Download ${b.id}`, onclick: () => download(b)}, "Download"),
          h("button", {type: "button", class: "danger", "aria-label": `Delete ${b.id}`,
            onclick: act(() => api.del(`backups/${encodeURIComponent(b.id)}`), () => `${b.id} deleted.`)}, "Delete")) : "")},
      ], page.items));
      if (page.items.some((b) => b.status === "running")) timer = setTimeout(draw, 2000);
    } catch (err) {
      fill(list, errorBox(err));
    }
  }
  await draw();
  return () => clearTimeout(timer);
}
