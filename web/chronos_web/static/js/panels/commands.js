// Commands: the queue per system with status filters and live refresh; retry, cancel, manual complete
// and fail; dead letters; the whitelist and workflow editors.

const STATUSES = ["pending", "processing", "completed", "failed", "dead", "cancelled", "missed"];
const REFRESH_MS = 5000;

export async function render(root, kit) {
  const {api, h, fill, fmt, field, empty, errorBox, json, statusBadge, table} = kit;
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
    const sys = h("input", {type: "text", required: true, autocomplete: "off"});
    const action = h("input", {type: "text", required: true, autocomplete: "off"});
    const params = h("textarea", {rows: 3, class: "code"}, '{"version": {"regex": "[0-9.]{1,20}"}}');
    const schedule = h("select", {}, h("option", {value: "now"}, "now"), h("option", {value: "event_start"}, "event_start"));
    const form = h("form", {class: "card stack"}, h("h3", {}, "Add an entry"),
      h("div", {class: "row"}, field("System", sys), field("Action", action), field("Schedule", schedule)),
      field("Parameter rules (JSON)", params, {hint: 'name → null (any), "regex", ["a","b"], {"regex": …} or {"enum": […]}'}),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Add")), out);
    fill(el, list, form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api.post("whitelists", {system: sys.value.trim(), action: action.value.trim(),
          allowed_params_json: JSON.parse(params.value || "{}"), schedule: schedule.value});
        out.replaceChildren(h("p", {class: "ok"}, "Added."));
        draw();
      } catch (err) {
        out.replaceChildren(errorBox(err));
      }
    });
    /** The rules as text, with an editor in place (PATCH allowed_params_json). */
    function rulesCell(w) {
      const cell = h("div", {class: "stack"});
      const show = () => fill(cell, json(w.allowed_params_json),
        w.origin === "config" ? h("span", {class: "muted"}, "from the configuration file")
          : h("button", {type: "button", "aria-label": `Edit the rules of ${w.system} ${w.action}`, onclick: edit}, "Edit rules"));
      function edit() {
        const text = h("textarea", {rows: 3, class: "code", "aria-label": `Rules of ${w.system} ${w.action}`},
          JSON.stringify(w.allowed_params_json, null, 2));
        const err = h("div", {role: "status"});
        const form = h("form", {class: "stack"}, text, h("div", {class: "row"},
          h("button", {type: "submit", class: "primary"}, "Save rules"), h("button", {type: "button", onclick: show}, "Cancel")), err);
        form.addEventListener("submit", async (e) => {
          e.preventDefault();
          try {
            const updated = await api.patch(`whitelists/${w.id}`, {allowed_params_json: JSON.parse(text.value || "{}")});
            Object.assign(w, updated);
            show();
          } catch (error) {
            fill(err, errorBox(error));
          }
        });
        fill(cell, form);
        text.focus();
      }
      show();
      return cell;
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
          {label: "Parameter rules", cell: (w) => rulesCell(w)},
          {label: "Schedule", cell: (w) => w.schedule},
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
          {label: "", cell: (w) => h("button", {type: "button", class: "danger", "aria-label": `Delete ${w.system} ${w.action}`,
            onclick: async () => {
              try {
                await api.del(`whitelists/${w.id}`);
                draw();
              } catch (err) {
                out.replaceChildren(errorBox(err));
              }
            }}, "Delete")},
        ], page.items));
      } catch (err) {
        fill(list, errorBox(err));
      }
    }
    draw();
  }

  async function workflows(el) {
    const list = h("div");
    const out = h("div", {role: "status"});
    const spec = h("textarea", {rows: 8, class: "code"}, JSON.stringify({
      name: "notify after deploy", trigger_command: "DEPLOY", on: "completed",
      action_command: "RESTART", action_target: "cache-2", params_template_json: {reason: "after deploy {{ id }}"},
    }, null, 2));
    const form = h("form", {class: "card stack"}, h("h3", {}, "Add a workflow"),
      field("Workflow (JSON)", spec, {hint: "on completed or failed of trigger_command, queue action_command on action_target"}),
      h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Add")), out);
    fill(el, list, form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api.post("workflows", JSON.parse(spec.value));
        out.replaceChildren(h("p", {class: "ok"}, "Added."));
        draw();
      } catch (err) {
        out.replaceChildren(errorBox(err));
      }
    });
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
          {label: "Then", cell: (w) => `${w.action_command}@${w.action_target}`},
          {label: "Params", cell: (w) => json(w.params_template_json)},
          {label: "", cell: (w) => h("button", {type: "button", class: "danger", "aria-label": `Delete workflow ${w.name}`,
            onclick: async () => {
              try {
                await api.del(`workflows/${w.id}`);
                draw();
              } catch (err) {
                out.replaceChildren(errorBox(err));
              }
            }}, "Delete")},
        ], page.items));
      } catch (err) {
        fill(list, errorBox(err));
      }
    }
    draw();
  }

  show("queue");
  return () => stop();
}
