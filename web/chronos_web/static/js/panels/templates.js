// Templates: list, an editor with line numbers and errors at their line, a sandboxed HTML preview,
// the placeholder cheat-sheet from the variable schema, test send, import and export.

function sample(schema) {
  const out = {};
  for (const [name, prop] of Object.entries((schema && schema.properties) || {})) {
    const type = Array.isArray(prop.type) ? prop.type[0] : prop.type;
    out[name] = prop.examples ? prop.examples[0] : prop.default !== undefined ? prop.default
      : type === "number" || type === "integer" ? 1 : type === "boolean" ? true
      : type === "array" ? [] : type === "object" ? {} : `sample ${name}`;
  }
  return out;
}

function download(name, data) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], {type: "application/json"}));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export async function render(root, kit) {
  const {api, h, fill, field, empty, errorBox, table} = kit;
  const list = h("div");
  const editor = h("div");
  const out = h("div", {role: "status"});
  const importer = h("input", {type: "file", accept: "application/json,.json"});
  fill(root,
    h("div", {class: "toolbar"},
      h("button", {type: "button", class: "primary", onclick: () => create()}, "New email template"),
      h("button", {type: "button", onclick: () => exportAll()}, "Export all"),
      field("Import (JSON export)", importer)),
    out,
    h("div", {class: "grid2 wide-right"}, list, editor));

  async function exportAll() {
    try {
      download("chronos-templates.json", await api.get("templates/export"));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  importer.addEventListener("change", async () => {
    const file = importer.files[0];
    if (!file) return;
    try {
      const result = await api.post("templates/import", JSON.parse(await file.text()), {on_conflict: "skip"});
      out.replaceChildren(h("p", {class: "ok"}, `Imported: ${JSON.stringify(result)}`));
      load();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
    importer.value = "";
  });

  function create() {
    const name = h("input", {type: "text", required: true, autocomplete: "off"});
    const form = h("form", {class: "card stack"}, h("h3", {}, "New email template"), field("Name", name),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Create")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const t = await api.post("templates", {name: name.value, type: "email",
          variables_json: {type: "object", properties: {name: {type: "string"}}},
          content: {subject: "Hello {{ name }}", html: "<h1>Hello {{ name }}</h1>\n<p>…</p>"}});
        await load();
        open(t.id);
      } catch (err) {
        form.append(errorBox(err));
      }
    });
    fill(editor, form);
    name.focus();
  }

  async function load() {
    try {
      const page = await api.get("templates", {limit: 200, sort: "name"});
      if (!page.items.length) {
        fill(list, empty("No templates yet: create one with “New email template” or import an export."));
        return;
      }
      if (!editor.childNodes.length) open(page.items[0].id);
      fill(list, table([
        {label: "Name", cell: (t) => h("button", {type: "button", class: "ev", onclick: () => open(t.id)}, t.name)},
        {label: "Type", cell: (t) => t.type},
        {label: "Used", cell: (t) => String(t.usage_count)},
      ], page.items));
    } catch (err) {
      fill(list, errorBox(err));
    }
  }

  let opening = 0;
  async function open(id) {
    const mine = ++opening;
    fill(editor, h("p", {class: "muted"}, "Loading…"));
    let t;
    let vars;
    try {
      [t, vars] = await Promise.all([api.get(`templates/${id}`), api.get(`templates/${id}/variables`)]);
    } catch (err) {
      if (mine === opening) fill(editor, errorBox(err));
      return;
    }
    if (mine !== opening) return; // another template was opened meanwhile
    const parts = Object.keys(t.content).filter((k) => typeof t.content[k] === "string" || t.content[k] === null);
    const draft = {...t.content};
    let part = parts.includes("html") ? "html" : parts[0];
    const partSelect = h("select", {}, parts.map((p) => h("option", {value: p, selected: p === part}, p)));
    const gutter = h("pre", {class: "gutter", "aria-hidden": "true"});
    const source = h("textarea", {class: "code", spellcheck: "false", "aria-label": "Template source", wrap: "off"});
    const problem = h("div", {role: "alert"});
    const variables = h("textarea", {class: "code", rows: 4, spellcheck: "false"}, JSON.stringify(sample(t.variables_json), null, 2));
    const frame = h("iframe", {class: "preview", title: "HTML preview", sandbox: "", referrerpolicy: "no-referrer"});
    const to = h("input", {type: "email", autocomplete: "off", placeholder: "you@example.com"});
    const status = h("div", {role: "status"});
    let badLine = 0;

    function numbers() {
      const n = source.value.split("\n").length;
      fill(gutter, Array.from({length: n}, (_, i) => h("span", {class: i + 1 === badLine ? "bad" : ""}, `${i + 1}\n`)));
      gutter.scrollTop = source.scrollTop;
    }
    function showPart() {
      source.value = draft[part] || "";
      badLine = 0;
      numbers();
    }
    let timer = null;
    source.addEventListener("input", () => {
      draft[part] = source.value;
      numbers();
      clearTimeout(timer);
      // The draft as written (placeholders unrendered) until it is saved and rendered.
      if (part === "html") timer = setTimeout(() => { frame.srcdoc = source.value; }, 250);
    });
    source.addEventListener("scroll", () => { gutter.scrollTop = source.scrollTop; });
    partSelect.addEventListener("change", () => { part = partSelect.value; showPart(); });

    function showProblem(err) {
      const e = err.problem && (err.problem.errors || []).find((x) => x.line);
      if (e) {
        const at = (e.pointer || "").split("/").pop();
        if (at && parts.includes(at) && at !== part) {
          part = at;
          partSelect.value = at;
          showPart();
        }
        badLine = e.line;
        numbers();
        fill(problem, h("p", {class: "error"}, `Line ${e.line}${e.column ? `, column ${e.column}` : ""}: ${e.detail}`));
      } else {
        fill(problem, errorBox(err));
      }
    }

    async function save() {
      problem.replaceChildren();
      try {
        await api.patch(`templates/${id}`, {content: draft});
        badLine = 0;
        numbers();
        status.replaceChildren(h("p", {class: "ok"}, "Saved."));
        return true;
      } catch (err) {
        showProblem(err);
        return false;
      }
    }
    function sampleVars() {
      try {
        return JSON.parse(variables.value || "{}");
      } catch {
        throw new Error("The sample variables are not valid JSON.");
      }
    }
    let renders = 0;
    async function preview(saveFirst = true) {
      const mine = ++renders;
      clearTimeout(timer); // the rendered version replaces the raw draft
      if (saveFirst && !(await save())) return;
      try {
        const res = await api.post(`templates/${id}/render`, {variables: sampleVars()});
        if (mine !== renders) return; // a newer preview is on its way
        clearTimeout(timer);
        const o = res.output || {};
        frame.srcdoc = o.html || (o.text ? `<pre>${o.text.replace(/[&<>]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;"})[c])}</pre>` : JSON.stringify(o));
        status.replaceChildren(h("p", {class: "ok"}, o.subject ? `Rendered. Subject: ${o.subject}` : "Rendered."));
      } catch (err) {
        showProblem(err);
      }
    }
    async function testSend(e) {
      e.preventDefault();
      try {
        const res = await api.post(`templates/${id}/test-send`, {to: [to.value], variables: sampleVars()});
        status.replaceChildren(h("p", {class: "ok"}, `Test mail queued (${JSON.stringify(res)}).`));
      } catch (err) {
        status.replaceChildren(errorBox(err));
      }
    }
    const insert = (name) => {
      const at = source.selectionStart ?? source.value.length;
      source.setRangeText(`{{ ${name} }}`, at, source.selectionEnd ?? at, "end");
      source.dispatchEvent(new Event("input"));
      source.focus();
    };
    const cheats = [...vars.variables.map((v) => ({...v})), ...vars.undeclared.map((name) => ({name, undeclared: true}))];
    fill(editor,
      h("div", {class: "card stack"},
        h("h3", {}, `${t.name} (${t.type})`),
        field("Part", partSelect),
        h("div", {class: "editor"}, gutter, source),
        problem,
        h("div", {class: "row"},
          h("button", {type: "button", onclick: save}, "Save"),
          h("button", {type: "button", class: "primary", onclick: () => preview()}, "Save and preview")),
        status,
        h("h3", {}, "Placeholders"),
        cheats.length ? h("ul", {class: "checklist"}, cheats.map((v) => h("li", {},
          h("button", {type: "button", "aria-label": `Insert ${v.name}`, onclick: () => insert(v.name)}, `{{ ${v.name} }}`), " ",
          h("span", {class: "muted"}, v.undeclared ? "used but not in the schema"
            : `${(v.schema && v.schema.type) || "any"}${v.required ? ", required" : ""}${v.used_in.length ? ` · in ${v.used_in.join(", ")}` : " · unused"}`))))
          : h("p", {class: "muted"}, "No variables: declare them in the template's variables_json."),
        field("Sample variables (JSON)", variables),
        h("h3", {}, "Preview"), frame,
        t.type === "email" ? h("form", {class: "row", onsubmit: testSend}, field("Test send to", to),
          h("button", {type: "submit"}, "Send test")) : null));
    showPart();
    frame.srcdoc = draft.html || "";
    if (t.type === "email") preview(false); // the stored version, rendered with the sample variables
  }

  await load();
}
