// The hello plugin's dashboard panel: the web plugin imports this module and calls render().
// It is served without a key at /ui/plugins/hello/panel.js, so it holds code only; data comes
// from the API through kit.api, with the signed-in user's key.

export const title = "Greetings";

// Shown only to keys this GET answers 2xx (hello.read); others never see the panel.
export const probe = ["hello/greetings", {limit: 1}];

export async function render(root, kit) {
  const {api, h, fill, field, empty, errorBox, fmt, table} = kit;
  const name = h("input", {type: "text", name: "name", required: true, autocomplete: "off"});
  const out = h("div", {role: "status", "aria-live": "polite"});
  const recent = h("div");
  const form = h("form", {class: "card stack"},
    field("Who to greet", name),
    h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Greet")),
    out);

  async function load() {
    try {
      const page = await api.get("hello/greetings", {limit: 10});
      fill(recent, page.items.length
        ? table([{label: "Name", cell: (g) => g.name}, {label: "When", cell: (g) => fmt.dateTime(g.created_at)}],
          page.items, "Recent greetings")
        : empty("Nobody greeted yet: greet someone above."));
    } catch (err) {
      fill(recent, errorBox(err));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const greeting = await api.post("hello", {name: name.value});
      // Text only: a name is data, never markup.
      fill(out, h("p", {class: "ok"}, `${greeting.message} (greeted ${greeting.times_greeted}×)`));
      load();
    } catch (err) {
      fill(out, errorBox(err)); // a key without hello.write: the problem's detail
    }
  });
  fill(root, form, recent);
  await load();
}
