// Commands: the queue per system with status filters and live refresh; retry, cancel, manual complete
// and fail; dead letters; the whitelist and workflow editors.

const STATUSES = ["pending", "processing", "completed", "failed", "dead", "cancelled", "missed"];
const REFRESH_MS = 5000;

export async function render(root, kit) {
  const {api, h, fill, fmt, field, fieldErrors, empty, errorBox, json, statusBadge, table} = kit;
  const tabs = [["queue", "Queue"], ["dead", "Dead letters"], ["whitelist", "Whitelist"], ["workflows", "Workflows"]];
  const body = h("div");
  const tabButtons = tabs.map(([id, label]) =>
    h("button", {type: "button", "data-tab": id, onclick: () => show(id)}, label));
  fill(root, h("div", {class: "row", role: "group", "aria-label": "Command views"}, tabButtons), body);
  let stop = () => {};

  function show(id) {
    stop();
    stop = () => {};
    for (const b of tabButtons) b.setAttribute("aria-pressed", String(b.dataset.tab === id));
    if (id === "queue") stop = queue(body, null);
    else if (id === "dead") stop = queue(body, ["dead"]);
    else if (id === "whitelist") whitelist(body);
    else workflows(body);
  }

  function queue(el, fixed) {
    const system = h("input", {type: "text", name: "system", placeholder: "all systems", autocomplete: "off"});
    const status = h("select", {name: "status"}, h("option", {value: ""}, "Any status"),
      STATUSES.map((s) => h("option", {value: s}, s)));
    const live = h("input", {type: "checkbox", name: "live", checked: true});
    const rows = h("div");
    const out = h("div", {role: "status", "aria-live": "polite"});
    const more = h("button", {type: "button", hidden: true}, "Load more");
    let cursor = null;
    let items = [];
    fill(el,
      h("form", {class: "toolbar", onsubmit: (e) => { e.preventDefault(); load(true); }},
        field("System", system), fixed ? null : field("Status", status),
        field("Live refresh", live, {inline: true}), h("button", {type: "submit"}, "Refresh")),
      out, rows, more);

    async function act(cmd, verb, payload) {
      out.replaceChildren();
      try {
        const updated = await api.post(`commands/${cmd.id}/${verb}`, payload);
        out.replaceChildren(h("p", {class: "ok"}, `Command ${cmd.id} is now ${updated.status}.`));
        await load(true);
      } catch (err) {
        out.replaceChildren(errorBox(err));
      }
    }

    function resolveForm(cmd, cell) {
      const kind = h("select", {}, h("option", {value: "manual-complete"}, "Complete"), h("option", {value: "manual-fail"}, "Fail"));
      const text = h("input", {type: "text", placeholder: "result (JSON) or error", autocomplete: "off"});
      const form = h("form", {class: "row"}, field("Outcome", kind), field("Result or error", text),
        h("button", {type: "submit", class: "primary"}, "Apply"), h("button", {type: "button", onclick: () => draw()}, "Cancel"));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        if (kind.value === "manual-fail") {
          act(cmd, "manual-fail", {error: text.value || "failed by an operator"});
          return;
        }
        let result = null;
        if (text.value.trim()) {
          try {
            result = JSON.parse(text.value);
          } catch {
            result = text.value;
          }
        }
        act(cmd, "manual-complete", {result});
      });
      fill(cell, form);
      text.focus();
    }

    function actions(cmd) {
      const cell = h("div", {class: "row"});
      const label = `command ${cmd.id}`;
      if (cmd.status === "dead" || cmd.status === "failed" || cmd.status === "missed")
        cell.append(h("button", {type: "button", "aria-label": `Retry ${label}`, onclick: () => act(cmd, "retry")}, "Retry"));
      if (cmd.status === "pending" || cmd.status === "processing") {
        cell.append(
          h("button", {type: "button", "aria-label": `Complete or fail ${label} by hand`, onclick: () => resolveForm(cmd, cell)}, "Resolve…"),
          h("button", {type: "button", class: "danger", "aria-label": `Cancel ${label}`,
            onclick: () => act(cmd, "cancel", {reason: "cancelled from the dashboard"})}, "Cancel"));
      }
      return cell;
    }

    function draw() {
      if (!items.length) {
        fill(rows, empty(fixed ? "No dead letters: every command that ran out of attempts would show here."
          : "No commands match. Commands come from ACTION: calendar entries or POST /api/v1/commands."));
        return;
      }
      fill(rows, table([
        {label: "ID", cell: (c) => String(c.id)},
        {label: "System", cell: (c) => c.target_system},
        {label: "Command", cell: (c) => c.command},
        {label: "Params", cell: (c) => json(c.params)},
        {label: "Status", cell: (c) => statusBadge(c.status)},
        {label: "Attempts", cell: (c) => `${c.attempts}/${c.max_attempts}`},
        {label: "Due", cell: (c) => fmt.dateTime(c.not_before)},
        {label: "Result / error", cell: (c) => (c.error ? h("span", {class: "error"}, c.error) : json(c.result))},
        {label: "Actions", cell: actions},
      ], items));
    }

    async function load(reset) {
      if (reset) cursor = null;
      try {
        const page = await api.get("commands", {
          system: system.value.trim() || undefined,
          status: fixed || (status.value ? [status.value] : undefined),
          limit: 50,
          cursor: reset ? undefined : cursor,
        });
        items = reset ? page.items : items.concat(page.items);
        cursor = page.next_cursor;
        more.hidden = !cursor;
        draw();
      } catch (err) {
        fill(rows, errorBox(err));
      }
    }
    more.addEventListener("click", () => load(false));
    status.addEventListener("change", () => load(true));
    // Live refresh: poll while the tab is visible and no resolve form is open.
    const timer = setInterval(() => {
      if (live.checked && !document.hidden && !rows.querySelector("form")) load(true);
    }, REFRESH_MS);
    load(true);
    return () => clearInterval(timer);
  }

  async function whitelist(el) {
    const list = h("div");
    const out = h("div", {role: "status"});
    const sys = h("input", {type: "text", name: "system", required: true, autocomplete: "off"});
    const action = h("input", {type: "text", name: "action", required: true, autocomplete: "off"});
    const params = h("textarea", {rows: 3, class: "code", name: "allowed_params_json"}, '{"version": {"regex": "[0-9.]{1,20}"}}');
    const schedule = h("select", {name: "schedule"}, h("option", {value: "now"}, "now"), h("option", {value: "event_start"}, "event_start"));
    const form = h("form", {class: "card stack", novalidate: true, "aria-label": "Add an entry"}, h("h3", {}, "Add an entry"),
      h("div", {class: "row"}, field("System", sys), field("Action", action), field("Schedule", schedule)),
      field("Parameter rules (JSON)", params, {hint: 'name → null (any), "regex", ["a","b"], {"regex": …} or {"enum": […]}'}),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Add")), out);
    const editor = h("div");
    fill(el, list, editor, form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      fieldErrors(form, null);
      let rules;
      try {
        rules = JSON.parse(params.value || "{}");
      } catch (err) {
        out.replaceChildren(fieldErrors(form, {problem: {errors: [{pointer: "/allowed_params_json", detail: `not valid JSON (${err.message})`}]}}));
        return;
      }
      try {
        await api.post("whitelists", {system: sys.value.trim(), action: action.value.trim(), allowed_params_json: rules, schedule: schedule.value});
        out.replaceChildren(h("p", {class: "ok"}, "Added."));
        draw();
      } catch (err) {
        out.replaceChildren(fieldErrors(form, err));
      }
    });
    const commaList = (text) => (text.trim() ? text.split(",").map((x) => x.trim()).filter(Boolean) : null);
    /** Every field PATCH /whitelists/{id} takes, as a form; server errors show at their field. */
    function edit(w) {
      const label = `${w.system} ${w.action}`;
      const rules = h("textarea", {name: "allowed_params_json", rows: 4, class: "code", spellcheck: "false"},
        JSON.stringify(w.allowed_params_json, null, 2));
      const when = h("select", {name: "schedule"}, ["now", "event_start"].map((v) => h("option", {value: v, selected: w.schedule === v}, v)));
      const attempts = h("input", {type: "number", name: "max_attempts", min: 1, max: 100, step: 1, value: w.max_attempts ?? ""});
      const grace = h("input", {type: "number", name: "grace_seconds", min: 0, step: 1, value: w.grace_seconds ?? ""});
      const description = h("input", {type: "text", name: "description", value: w.description, autocomplete: "off"});
      const sources = h("input", {type: "text", name: "sources", value: (w.sources || []).join(", "), autocomplete: "off"});
      const calendars = h("input", {type: "text", name: "calendars", value: (w.calendars || []).join(", "), autocomplete: "off"});
      const err = h("div", {role: "status"});
      const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
      const form = h("form", {class: "card stack", novalidate: true, "aria-label": `Edit ${label}`},
        h("h3", {}, `Edit ${label}`),
        field("Parameter rules (JSON)", rules, {hint: 'name → null (any), "regex", ["a","b"], {"regex": …} or {"enum": […]}'}),
        h("div", {class: "row"}, field("Schedule", when), field("Max attempts", attempts, {hint: "empty: the queue's default"}),
          field("Grace (seconds)", grace, {hint: "empty: no limit"})),
        field("Description", description),
        h("div", {class: "row"}, field("Sources (comma separated)", sources, {hint: "empty: any"}),
          field("Calendars (comma separated)", calendars, {hint: "empty: any"})),
        h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Save"),
          h("button", {type: "button", onclick: () => editor.replaceChildren()}, "Cancel")),
        err);
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        fieldErrors(form, null);
        err.replaceChildren();
        if (notNumbers(form, err)) return;
        let parsed;
        try {
          parsed = JSON.parse(rules.value || "{}");
        } catch (error) {
          err.replaceChildren(fieldErrors(form, {problem: {errors: [{pointer: "/allowed_params_json", detail: `not valid JSON (${error.message})`}]}}));
          return;
        }
        try {
          await api.patch(`whitelists/${w.id}`, {
            allowed_params_json: parsed, schedule: when.value, max_attempts: number(attempts), grace_seconds: number(grace),
            description: description.value, sources: commaList(sources.value), calendars: commaList(calendars.value),
          });
          editor.replaceChildren();
          out.replaceChildren(h("p", {class: "ok"}, `${label} saved.`));
          draw();
        } catch (error) {
          err.replaceChildren(fieldErrors(form, error));
        }
      });
      fill(editor, form);
      rules.focus();
    }

    async function draw() {
      try {
        const page = await api.get("whitelists", {limit: 500});
        if (!page.items.length) {
          fill(list, empty("No whitelist entries: no calendar entry or API call can queue a command until you add one below."));
          return;
        }
        fill(list, table([
          {label: "System", cell: (w) => w.system},
          {label: "Action", cell: (w) => w.action},
          {label: "Parameter rules", cell: (w) => json(w.allowed_params_json)},
          {label: "Schedule", cell: (w) => w.schedule},
          {label: "Attempts", cell: (w) => (w.max_attempts === null ? "default" : String(w.max_attempts))},
          {label: "Grace", cell: (w) => (w.grace_seconds === null ? "" : `${w.grace_seconds} s`)},
          {label: "Origin", cell: (w) => w.origin},
          {label: "Enabled", cell: (w) => {
            const box = h("input", {type: "checkbox", checked: w.enabled, "aria-label": `Enable ${w.system} ${w.action}`});
            box.addEventListener("change", async () => {
              try {
                await api.patch(`whitelists/${w.id}`, {enabled: box.checked});
              } catch (err) {
                box.checked = !box.checked;
                out.replaceChildren(errorBox(err));
              }
            });
            return box;
          }},
          {label: "", cell: (w) => (w.origin === "config" ? h("span", {class: "muted"}, "from the configuration file")
            : h("div", {class: "row"},
              h("button", {type: "button", "aria-label": `Edit ${w.system} ${w.action}`, onclick: () => edit(w)}, "Edit"),
              h("button", {type: "button", class: "danger", "aria-label": `Delete ${w.system} ${w.action}`,
                onclick: async () => {
                  try {
                    await api.del(`whitelists/${w.id}`);
                    draw();
                  } catch (err) {
                    out.replaceChildren(errorBox(err));
                  }
                }}, "Delete")))},
        ], page.items));
      } catch (err) {
        fill(list, errorBox(err));
      }
    }
    draw();
  }

  /** Number inputs holding text the browser cannot read (their value is ""), shown at the field. */
  function notNumbers(form, box) {
    const bad = [...form.querySelectorAll('input[type="number"]')].filter((i) => i.validity.badInput);
    if (bad.length) box.replaceChildren(fieldErrors(form, {problem: {errors: bad.map((i) => ({pointer: `/${i.name}`, detail: "not a number"}))}}));
    return bad.length > 0;
  }

  /** A workflow's fields as a form (create, or edit with PATCH); server errors show at their field. */
  function workflowForm(w, done) {
    const text = (name, value, attrs = {}) => h("input", {type: "text", name, value: value ?? "", autocomplete: "off", ...attrs});
    const on = h("select", {name: "on"}, ["completed", "failed"].map((o) => h("option", {value: o, selected: (w ? w.on : "completed") === o}, o)));
    const params = h("textarea", {name: "params_template_json", rows: 3, class: "code", spellcheck: "false"},
      JSON.stringify(w ? w.params_template_json : {reason: "after {{ command }} {{ id }}"}, null, 2));
    const delay = h("input", {type: "number", name: "delay_seconds", min: 0, step: 1, value: String(w ? w.delay_seconds : 0)});
    const enabled = h("input", {type: "checkbox", name: "enabled", checked: w ? w.enabled : true});
    const controls = {
      name: text("name", w && w.name, {required: true}),
      trigger_command: text("trigger_command", w && w.trigger_command, {required: true, placeholder: "DEPLOY"}),
      trigger_target: text("trigger_target", w && w.trigger_target, {placeholder: "any system"}),
      action_command: text("action_command", w && w.action_command, {required: true, placeholder: "RESTART"}),
      action_target: text("action_target", w && w.action_target, {required: true, placeholder: "cache-2"}),
    };
    const out = h("div", {role: "status"});
    const title = w ? `Edit workflow ${w.name}` : "Add a workflow";
    const form = h("form", {class: "card stack", novalidate: true, "aria-label": title}, h("h3", {}, title),
      field("Name", controls.name),
      h("div", {class: "row"}, field("When command", controls.trigger_command),
        field("of system (optional)", controls.trigger_target), field("has", on)),
      h("div", {class: "row"}, field("Then queue command", controls.action_command),
        field("for system", controls.action_target), field("Delay (seconds)", delay)),
      field("Parameters (JSON template)", params,
        {hint: "every string is a template over params, result, error, command, target, id, attempts and status"}),
      field("Enabled", enabled, {inline: true}),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, w ? "Save" : "Add"),
        w ? h("button", {type: "button", onclick: () => done(null)}, "Cancel") : null),
      out);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      fieldErrors(form, null);
      out.replaceChildren();
      if (notNumbers(form, out)) return;
      let template;
      try {
        template = JSON.parse(params.value || "{}");
      } catch (err) {
        out.replaceChildren(fieldErrors(form, {problem: {errors: [{pointer: "/params_template_json", detail: `not valid JSON (${err.message})`}]}}));
        return;
      }
      const body = {
        name: controls.name.value.trim(),
        trigger_command: controls.trigger_command.value.trim(),
        trigger_target: controls.trigger_target.value.trim() || null,
        on: on.value,
        action_command: controls.action_command.value.trim(),
        action_target: controls.action_target.value.trim(),
        params_template_json: template,
        delay_seconds: delay.value === "" ? 0 : Number(delay.value),
        enabled: enabled.checked,
      };
      try {
        const saved = w ? await api.patch(`workflows/${w.id}`, body) : await api.post("workflows", body);
        done(saved);
      } catch (err) {
        out.replaceChildren(fieldErrors(form, err));
      }
    });
    return form;
  }

  async function workflows(el) {
    const list = h("div");
    const out = h("div", {role: "status"});
    const editor = h("div");
    const blank = () => fill(editor, workflowForm(null, (made) => {
      out.replaceChildren(h("p", {class: "ok"}, `Workflow ${made.name} added.`));
      blank();
      draw();
    }));
    fill(el, list, out, editor);
    blank();
    function edit(w) {
      fill(editor, workflowForm(w, (saved) => {
        if (saved) out.replaceChildren(h("p", {class: "ok"}, `Workflow ${saved.name} saved.`));
        blank();
        draw();
      }));
      editor.querySelector("input").focus();
    }
    async function draw() {
      try {
        const page = await api.get("workflows", {limit: 200});
        if (!page.items.length) {
          fill(list, empty("No workflows: add one below to queue a follow-up command when another completes or fails."));
          return;
        }
        fill(list, table([
          {label: "Name", cell: (w) => w.name},
          {label: "When", cell: (w) => `${w.trigger_command}${w.trigger_target ? `@${w.trigger_target}` : ""} ${w.on}`},
          {label: "Then", cell: (w) => `${w.action_command}@${w.action_target}${w.delay_seconds ? ` after ${w.delay_seconds} s` : ""}`},
          {label: "Params", cell: (w) => json(w.params_template_json)},
          {label: "Enabled", cell: (w) => (w.enabled ? "yes" : "no")},
          {label: "", cell: (w) => h("div", {class: "row"},
            h("button", {type: "button", "aria-label": `Edit workflow ${w.name}`, onclick: () => edit(w)}, "Edit"),
            h("button", {type: "button", class: "danger", "aria-label": `Delete workflow ${w.name}`,
              onclick: async () => {
                try {
                  await api.del(`workflows/${w.id}`);
                  draw();
                } catch (err) {
                  out.replaceChildren(errorBox(err));
                }
              }}, "Delete"))},
        ], page.items));
      } catch (err) {
        fill(list, errorBox(err));
      }
    }
    draw();
  }

  show("queue");
  // The whitelist and workflow editors need an admin key: other keys do not see their tabs.
  for (const id of ["whitelist", "workflows"]) {
    api.get(id === "whitelist" ? "whitelists" : "workflows", {limit: 1}).catch((err) => {
      if (err.status === 403) tabButtons.find((b) => b.dataset.tab === id).hidden = true;
    });
  }
  return () => stop();
}
