// The hello plugin's dashboard panel: the web plugin imports this module and calls render().
// It is served without a key at /ui/plugins/hello/panel.js, so it holds code only; data comes
// from the API through kit.api, with the signed-in user's key.

export const title = "Greetings";

export async function render(root, kit) {
  const {api, h, fill, field, errorBox} = kit;
  const name = h("input", {type: "text", name: "name", required: true, autocomplete: "off"});
  const out = h("div", {role: "status", "aria-live": "polite"});
  const form = h("form", {class: "card stack"},
    field("Who to greet", name),
    h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Greet")),
    out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const greeting = await api.post("hello", {name: name.value});
      // Text only: a name is data, never markup.
      fill(out, h("p", {class: "ok"}, `${greeting.message} (greeted ${greeting.times_greeted}×)`));
    } catch (err) {
      fill(out, errorBox(err));
    }
  });
  fill(root, form);
}
