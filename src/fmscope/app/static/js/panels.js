// The backend, export and ground-truth panels.

import { postJSON } from "./api.js";
import { plotScores } from "./plot.js";
import { $, app, clearError, guarded, showError } from "./ui.js";

// set by main.js: the session actions these panels call
export const actions = { applyState: () => {}, runJob: async () => null, setZ: () => {} };
const applyState = (state) => actions.applyState(state);
const runJob = (...args) => actions.runJob(...args);
const setZ = (z) => actions.setZ(z);

export async function exportWhat(what) {
  const data = await guarded(() => postJSON(`/api/sessions/${app.sid}/export`, {
    what, format: $("ex-format").value, accepted_only: $("ex-accepted").checked, binary: $("ex-binary").checked,
  }));
  if (!data) return;
  clearError();
  const li = document.createElement("li");
  const a = document.createElement("a");
  a.href = data.url; a.textContent = data.name; a.download = data.name; a.className = "name";
  li.dataset.export = what;
  li.append(a);
  $("exports").prepend(li);
}

export async function score() {
  const path = $("gt-path").value.trim();
  if (!path) { showError("ground truth: pick a labels file in the list (its GT button)"); return; }
  const values = $("gt-values").value.trim() ? $("gt-values").value.split(",").map(Number) : null;
  await runJob("scoring against the ground truth", () => postJSON(`/api/sessions/${app.sid}/compare`, {
    source: $("gt-path").dataset.source || "data", path, values,
  }), (result) => {
    $("gt-summary").textContent = `whole stack: Dice ${result.dice.toFixed(4)}, IoU ${result.iou.toFixed(4)} (objects ${result.objects.join(", ")})`;
    $("gt-plot").hidden = false;
    plotScores($("gt-plot"), result.slices, app.depth, setZ);
    const table = $("gt-table");
    table.replaceChildren();
    const head = table.insertRow();
    for (const h of ["z", "IoU", "Dice", "px", "true px"]) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
    for (const r of result.slices) {
      const row = table.insertRow();
      row.onclick = () => setZ(r.z);
      for (const v of [r.z, r.iou.toFixed(3), r.dice.toFixed(3), r.predicted, r.truth]) row.insertCell().textContent = String(v);
    }
    document.body.dataset.gtDice = String(result.dice);
  });
}

// ---- backends ----------------------------------------------------------------------------------------------------
export function fillBackends() {
  const select = $("backend");
  select.replaceChildren();
  for (const b of app.info.backends) {
    const opt = document.createElement("option");
    opt.value = b.name;
    opt.textContent = b.name;
    opt.disabled = !b.available;
    opt.title = b.available ? `${b.summary}; needs ${b.needs}` : b.reason;
    if (!b.available) opt.textContent += " (unavailable)";
    select.append(opt);
  }
  select.onchange = () => backendChanged(true);
  backendChanged(false);
  const g = app.info.grounding;
  $("text-reason").textContent = g.available ? "" : g.reason;
  $("phrase").disabled = !g.available;
  const init = $("train-init"); // the shipped backbones, then scratch; the server's default selected
  init.replaceChildren(...[...app.info.shipped, "scratch"].map((name) => Object.assign(document.createElement("option"), { value: name, textContent: name })));
  init.value = app.info.default_init;
}

export function backendChanged(apply) {
  const b = app.info.backends.find((x) => x.name === $("backend").value);
  const reasons = app.info.backends.filter((x) => !x.available).map((x) => `${x.name}: ${x.reason}`);
  $("backend-reason").textContent = reasons.join("\n");
  const models = $("backend-model");
  models.hidden = !(b && b.models && b.models.length);
  models.replaceChildren(...(b && b.models ? b.models : []).map((m) => { const o = document.createElement("option"); o.value = m; o.textContent = m; return o; }));
  $("fm-row").hidden = !(b && b.name === "fm");
  if (apply && app.sid && b && b.name !== "fm") setBackend();
}

export function backendSpec() {
  const method = $("backend").value || "rf";
  const spec = { method };
  if (!$("backend-model").hidden) spec.model = $("backend-model").value;
  if (method === "fm") spec.model_dir = $("fm-dir").value.trim();
  return spec;
}

export function syncBackend(backend) {
  if (document.activeElement !== $("backend")) $("backend").value = backend.method || backend.name;
}

export async function setBackend() {
  const state = await guarded(() => postJSON(`/api/sessions/${app.sid}/backend`, backendSpec()));
  if (state) { applyState(state); clearError(); }
}

