// pointseg app: the raster in its own pixel grid (Leaflet's CRS.Simple), clicks, and the fast model's map.
// User text (class names, file names, messages) goes into the page with textContent only, never as HTML.
"use strict";

const api = async (path, options = {}) => {
  const init = { credentials: "same-origin", ...options };
  if (init.json !== undefined) {
    init.body = JSON.stringify(init.json);
    init.headers = { "content-type": "application/json" };
    delete init.json;
  }
  const response = await fetch(`/api/${path}`, init);
  if (!response.ok) throw new Error(await failure(response));
  return response.status === 204 ? null : response.json();
};

// what a refused or failed request says: the server's message, whatever the body holds
async function failure(response) {
  const text = await response.text();
  try {
    const detail = JSON.parse(text).detail;
    if (detail) return typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch (e) { /* not JSON: a proxy's or the server's plain error page */ }
  return `${response.status} ${response.statusText || "error"}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

const app = { state: null, raster: null, image: null, active: 0, markers: new Map(), undo: [], round: 0,
  rings: [], selected: null, full: false, sinceUpdate: 0, updating: false, training: null };
const say = (text) => { document.getElementById("status").textContent = text; };
const imageQuery = () => `image=${encodeURIComponent(app.image)}`;
const layerUrl = (layer) =>
  `/api/tiles/${layer}/{z}/{x}/{y}.png?${imageQuery()}&round=${app.round}${app.full ? "&full=1" : ""}`;

function toLatLng(row, col) {
  const unit = 2 ** app.raster.levels;
  return L.latLng(-(row + 0.5) / unit, (col + 0.5) / unit);
}

function toPixel(latlng) {
  const unit = 2 ** app.raster.levels;
  return [Math.floor(-latlng.lat * unit), Math.floor(latlng.lng * unit)];
}

function drawPalette() {
  const list = document.getElementById("palette");
  list.replaceChildren();
  app.state.classes.forEach((c, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = c.color;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = c.name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = ` (${app.state.counts[i] || 0})`;
    item.append(swatch, label, count);
    item.dataset.index = i;
    if (i === app.active) item.classList.add("active");
    item.addEventListener("click", () => { app.active = i; drawPalette(); });
    list.append(item);
  });
}

function drawClick(click) {
  const colour = app.state.classes[click.class].color;
  let marker = app.markers.get(click.id);
  if (marker) {
    marker.setStyle({ fillColor: colour });
  } else {
    marker = L.circleMarker(toLatLng(click.row, click.col), { radius: 6, color: "#fff", weight: 1.5,
      fillColor: colour, fillOpacity: 1 }).addTo(app.map);
    marker.on("click", (event) => { L.DomEvent.stopPropagation(event); pointMenu(click.id); });
    app.markers.set(click.id, marker);
  }
  marker.click = click;
}

function pointMenu(id) {
  const marker = app.markers.get(id);
  const box = document.createElement("div");
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.addEventListener("click", () => { app.map.closePopup(); deleteClick(id, true); });
  const set = document.createElement("button");
  set.textContent = `Make it ${app.state.classes[app.active].name}`;
  set.addEventListener("click", () => { app.map.closePopup(); reclassify(id, app.active, true); });
  box.append(remove, document.createTextNode(" "), set);
  L.popup().setLatLng(marker.getLatLng()).setContent(box).openOn(app.map);
}

async function refresh() {
  app.state = await api("state");
  const shown = app.state.clicks.filter((c) => c.image === app.image);
  for (const [id, marker] of app.markers) {
    if (!shown.some((c) => c.id === id)) { marker.remove(); app.markers.delete(id); }
  }
  shown.forEach(drawClick);
  drawPalette();
  drawRings();
  document.getElementById("new-class").hidden = app.state.fixed_classes;
  if (app.round === 0) firstSteps();
}

function firstSteps() {  // before the first map: what to do
  const update = document.getElementById("update");
  const clicks = app.state.clicks.length;
  const classes = new Set(app.state.clicks.map((c) => c.class)).size;
  update.classList.toggle("next", classes >= 2);
  document.getElementById("model").textContent = "No map yet.";
  if (classes >= 2) {
    say(`${clicks} clicks of ${classes} classes: press Update map to make the first map (seconds).`);
  } else {
    say("Pick a class (keys 1-9, or the list above) and click on the image where it is; do the same for a " +
      "second class at least, then press Update map to make the first map.");
  }
}

async function addClick(row, col, cls, remember, image = app.image) {
  const click = await api("clicks", { method: "POST", json: { image, row, col, class: cls } });
  if (remember) app.undo.push(() => deleteClick(click.id, false));
  await refresh();
  app.sinceUpdate += 1;
  const every = Number(document.getElementById("auto").value);
  if (every > 0 && app.sinceUpdate >= every && !app.updating) await updateMap();
}

async function deleteClick(id, remember) {
  const old = app.state.clicks.find((c) => c.id === id);
  await api(`clicks/${id}`, { method: "DELETE" });
  if (remember) app.undo.push(() => addClick(old.row, old.col, old.class, false, old.image));
  await refresh();
}

async function reclassify(id, cls, remember) {
  const old = app.state.clicks.find((c) => c.id === id);
  await api(`clicks/${id}`, { method: "PATCH", json: { class: cls } });
  if (remember) app.undo.push(() => reclassify(id, old.class, false));
  await refresh();
}

function drawRings() {  // the project's unanswered suggestions on this image
  const shown = app.state.suggestions.filter((s) => s.image === app.image);
  const key = (s) => `${s.row},${s.col}`;
  const selected = app.selected ? key(app.selected.suggestion) : null;
  app.rings.forEach((ring) => ring.remove());
  app.rings = [];
  app.selected = null;
  shown.forEach((s) => {
    const icon = L.divIcon({ className: "ring", html: String(Number(s.rank)), iconSize: [22, 22] });
    const ring = L.marker(toLatLng(s.row, s.col), { icon, title: `suggestion ${s.rank}` }).addTo(app.map);
    ring.suggestion = s;
    ring.on("click", (event) => { L.DomEvent.stopPropagation(event); selectRing(ring); });
    app.rings.push(ring);
    if (key(s) === selected) selectRing(ring);
  });
}

function selectRing(ring) {
  app.rings.forEach((r) => r.getElement().classList.remove("selected"));
  ring.getElement().classList.add("selected");
  app.selected = ring;
}

async function suggestClicks() {
  const waiting = app.state.suggestions.filter((s) => s.image === app.image).length;
  const found = await api(`suggestions?k=10&${imageQuery()}`, { method: "POST" });
  await refresh();
  say(`${found.length} suggested clicks${waiting ? ` (they replace the ${waiting} not answered)` : ""}: ` +
    "select a ring, press the key of its class, or Delete to dismiss it");
}

async function dismissSuggestions(ring = null) {
  const where = ring ? `&row=${ring.suggestion.row}&col=${ring.suggestion.col}` : "";
  const answer = await api(`suggestions?${imageQuery()}${where}`, { method: "DELETE" });
  await refresh();
  say(`dismissed ${answer.dismissed} suggested click${answer.dismissed === 1 ? "" : "s"}`);
}

async function answerSuggestion(cls) {
  const ring = app.selected;
  app.selected = null;
  await addClick(ring.suggestion.row, ring.suggestion.col, cls, true);  // the project drops the answered one
}

function followTraining() {
  const events = new EventSource("/api/train/events");
  document.getElementById("cancel").disabled = false;
  events.onmessage = (message) => {
    const status = JSON.parse(message.data);
    const bar = document.getElementById("progress");
    if (status.steps) { bar.max = status.steps; bar.value = status.step; }
    if (status.state === "running") {
      say(status.steps ? `training fully: step ${status.step} of ${status.steps}, ${status.text}`
        : "training fully: setting up (the first step reads the images)");
      return;
    }
    events.close();
    document.getElementById("cancel").disabled = true;
    app.training = status.state;
    if (status.state === "done") {
      app.full = true;
      repaint();
      say("the fully trained model's map replaces the fast one");
      followRound(app.round).catch((e) => say(e.message));
    } else {
      say(`full training ${status.state}${status.message ? `: ${status.message}` : ""}`);
    }
  };
  events.onerror = () => { events.close(); document.getElementById("cancel").disabled = true; };
}

async function updateMap() {
  say("fitting the model on the clicks…");
  const t0 = performance.now();
  app.updating = true;
  app.sinceUpdate = 0;
  let result;
  try {
    result = await api("update", { method: "POST" });
  } finally {
    app.updating = false;
  }
  app.round = result.round;
  app.full = false;
  repaint();
  document.getElementById("update").classList.remove("next");
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  const waiting = app.state.suggestions.filter((s) => s.image === app.image).length;
  say(`map of round ${result.round} in ${seconds} s` +
    (waiting ? `; ${waiting} suggested clicks still wait for a class` : ""));
  await followRound(result.round);
}

const percent = (accuracy) => `${(100 * accuracy.accuracy).toFixed(0)}%`;

function modelText(answer) {  // which model draws the map on screen, and how good its clicks say it is
  if (!answer.model) return "No map yet.";
  if (answer.model === "full") {
    const fast = answer.fast_click_accuracy ? `; the fast model's was ${percent(answer.fast_click_accuracy)}` : "";
    return `Map: the fully trained model (round ${answer.round}'s clicks). Its click accuracy is not computed ` +
      `(it would take a training per fold)${fast}.`;
  }
  const accuracy = answer.click_accuracy ? `click accuracy ${percent(answer.click_accuracy)} ` +
    `(${answer.click_accuracy.folds}-fold, over the clicks)`
    : answer.pending ? "click accuracy: being computed"
      : "click accuracy: not computed (too few clicks to cross-validate, or fast.folds 0)";
  const head = answer.head ? `; ${answer.head}` : "";
  return `Map: fast model, round ${answer.round}; ${accuracy}${head}.`;
}

async function followRound(round) {  // the score and the click accuracy follow in the background
  for (let tries = 0; tries < 600; tries += 1) {
    const answer = await api("accuracy");
    if (answer.round !== round) return;
    document.getElementById("model").textContent = modelText(answer);
    if (answer.metrics) drawMetrics(answer.metrics);
    if (!answer.pending) return;
    await new Promise((done) => setTimeout(done, 500));
  }
}

function repaint() {
  app.mapLayer.setUrl(layerUrl("map"));
  app.certaintyLayer.setUrl(layerUrl("certainty"));
}

function drawMetrics(metrics) {
  const table = document.getElementById("metrics");
  table.replaceChildren();
  const row = (cells, header = false) => {
    const tr = document.createElement("tr");
    cells.forEach((text, i) => {
      const cell = document.createElement(header || i === 0 ? "th" : "td");
      cell.textContent = text;
      tr.append(cell);
    });
    table.append(tr);
  };
  const names = Object.keys(metrics.per_class_iou);
  row([`mIoU ${metrics.miou.toFixed(3)}`, "IoU", ...names.map((_, i) => String(i + 1))], true);
  names.forEach((name, i) => {  // rows: the mask's classes; columns: the map's
    const iou = metrics.per_class_iou[name];
    row([`${i + 1} ${name}`, iou === null ? "-" : iou.toFixed(3), ...metrics.confusion_matrix[i].map(String)]);
  });
}

function saveView() {  // where the page looks, kept in the project for the next visit
  clearTimeout(app.viewTimer);
  app.viewTimer = setTimeout(() => {
    const center = toPixel(app.map.getCenter());
    api("view", { method: "PUT", json: { image: app.image, center, zoom: app.map.getZoom() } }).catch(() => {});
  }, 500);
}

async function showImage(image, view = null) {
  app.image = image;
  app.raster = await api(`raster?${imageQuery()}`);
  document.getElementById("raster").textContent = `${app.raster.name}: ${app.raster.width} x ` +
    `${app.raster.height} pixels, ${app.raster.crs || "no CRS"}`;
  if (app.map) app.map.remove();
  app.markers.clear();
  app.rings = [];
  app.selected = null;
  const unit = 2 ** app.raster.levels;
  const bounds = L.latLngBounds([-app.raster.height / unit, 0], [0, app.raster.width / unit]);
  app.map = L.map("map", { crs: L.CRS.Simple, minZoom: 0, maxZoom: app.raster.levels + 3, zoomSnap: 1 });
  const tileOptions = { tileSize: 256, noWrap: true, bounds, maxNativeZoom: app.raster.levels, minZoom: 0,
    maxZoom: app.raster.levels + 3 };
  L.tileLayer(`/api/tiles/image/{z}/{x}/{y}.png?${imageQuery()}`, tileOptions).addTo(app.map);
  app.mapLayer = L.tileLayer(layerUrl("map"),
    { ...tileOptions, opacity: document.getElementById("opacity").value / 100 }).addTo(app.map);
  app.certaintyLayer = L.tileLayer(layerUrl("certainty"),
    { ...tileOptions, opacity: document.getElementById("certainty-opacity").value / 100 });
  if (document.getElementById("show-certainty").checked) app.certaintyLayer.addTo(app.map);
  if (view) app.map.setView(toLatLng(view.center[0], view.center[1]), view.zoom);
  else app.map.fitBounds(bounds);
  app.map.on("moveend", saveView);
  app.map.on("click", (event) => {
    const [row, col] = toPixel(event.latlng);
    if (row < 0 || col < 0 || row >= app.raster.height || col >= app.raster.width) return;
    addClick(row, col, app.active, true).catch((e) => say(e.message));
  });
  app.map.on("mousemove", (event) => {
    const [row, col] = toPixel(event.latlng);
    const [a, b, c, d, e, f] = app.raster.transform;
    const x = a * (col + 0.5) + b * (row + 0.5) + c, y = d * (col + 0.5) + e * (row + 0.5) + f;
    document.getElementById("pointer").textContent = `row ${row}, col ${col}; x ${x.toFixed(1)}, y ${y.toFixed(1)}`;
  });
  document.getElementById("export-map").href = `/api/export/map.zip?${imageQuery()}`;
  document.getElementById("image").value = image;
  await refresh();
}

async function start() {
  app.state = await api("state");
  const images = Object.keys(app.state.images);
  const picker = document.getElementById("image");
  images.forEach((id) => {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = id;
    picker.append(option);
  });
  picker.hidden = images.length < 2;
  picker.addEventListener("change", () => showImage(picker.value).catch((e) => say(e.message)));
  document.getElementById("show-certainty").addEventListener("change", (e) => {
    if (e.target.checked) app.certaintyLayer.addTo(app.map); else app.certaintyLayer.remove();
  });
  document.getElementById("train").addEventListener("click", () =>
    api("train", { method: "POST" }).then(followTraining).catch((e) => say(e.message)));
  document.getElementById("cancel").addEventListener("click", () =>
    api("train/cancel", { method: "POST" }).catch((e) => say(e.message)));
  document.getElementById("suggest").addEventListener("click", () => suggestClicks().catch((e) => say(e.message)));
  document.getElementById("opacity").addEventListener("input", (e) => app.mapLayer.setOpacity(e.target.value / 100));
  document.getElementById("certainty-opacity").addEventListener("input",
    (e) => app.certaintyLayer.setOpacity(e.target.value / 100));
  document.getElementById("dismiss").addEventListener("click",
    () => dismissSuggestions(app.selected).catch((e) => say(e.message)));
  document.getElementById("update").addEventListener("click", () => updateMap().catch((e) => say(e.message)));
  document.getElementById("undo").addEventListener("click", () => {
    const step = app.undo.pop();
    if (step) step().catch((e) => say(e.message));
  });
  document.getElementById("new-class").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = document.getElementById("new-name").value, color = document.getElementById("new-colour").value;
    api("classes", { method: "POST", json: { name, color } }).then(refresh).catch((e) => say(e.message));
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
    if ((event.key === "Delete" || event.key === "Backspace") && app.selected) {
      dismissSuggestions(app.selected).catch((e) => say(e.message));
      return;
    }
    const n = Number(event.key);
    if (!(n >= 1 && n <= 9 && n <= app.state.classes.length)) return;
    if (app.selected) answerSuggestion(n - 1).catch((e) => say(e.message));
    else { app.active = n - 1; drawPalette(); }
  });
  app.round = app.state.rounds;
  const training = await api("train");
  const shown = await api("accuracy");
  app.full = training.state === "done" || shown.model === "full";
  const view = app.state.view && images.includes(app.state.view.image) ? app.state.view : null;
  await showImage(view ? view.image : images[0], view);
  if (app.round > 0) {
    say(training.state === "running" ? "training fully…" : "");
    await followRound(app.round);
  }
  if (training.state === "running") followTraining();
}

start().catch((e) => say(e.message));
