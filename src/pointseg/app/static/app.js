// The page: every piece of user text goes in with textContent, never as HTML.
const api = (path, options = {}) =>
  fetch(`/api/${path}`, { credentials: "same-origin", ...options }).then(async (r) => {
    if (!r.ok) throw new Error((await r.json()).detail);
    return r.status === 204 ? null : r.json();
  });

function palette(state) {
  const box = document.getElementById("palette");
  box.replaceChildren();
  state.classes.forEach((c, i) => {
    const row = document.createElement("div");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = c.color;
    const label = document.createElement("span");
    label.textContent = `${i + 1}. ${c.name} (${state.counts[i]})`;
    row.append(swatch, label);
    box.append(row);
  });
}

api("state")
  .then(palette)
  .catch((e) => { document.getElementById("status").textContent = e.message; });
