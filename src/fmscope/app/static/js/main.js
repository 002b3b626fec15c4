// The fmscope page: files and sessions, the slice view, prompts and edits, jobs, exports.
//
// Everything the page changes goes to the server's session at once (each edit is saved there before the answer
// comes back); the page keeps no state of its own beyond what it shows. Tests read the state published on
// <body data-*> and window.fmscope.

import { ApiError, follow, getJSON, getRaw, postJSON, upload } from "./api.js";
import {
  actions, backendSpec, exportWhat, fillBackends, score, setBackend, syncBackend,
} from "./panels.js";
import { drawHistogram, cssColour } from "./render.js";
import { plotStats } from "./plot.js";
import { $, app, button, clearError, guarded, hooks, publish, rangeText, showError } from "./ui.js";
import { Viewer } from "./viewer.js";

// ---- viewer -----------------------------------------------------------------------------------------------------
const viewer = new Viewer($("viewer"), {
  onPoint: (y, x, positive) => withObject((id) => edit({ op: "add_point", id, z: app.z, y, x, positive })),
  onRemovePoint: (y, x) => app.selected != null && edit({ op: "remove_point", id: app.selected, z: app.z, y, x }),
  onBox: (box) => withObject((id) => edit({ op: "set_box", id, z: app.z, box })),
  onStroke: (points, positive, width) => withObject((id) => edit({ op: "add_stroke", id, z: app.z, points, width, positive })),
  onPaint: (points, erase, width) => {
    if (app.selected == null) { showError("paint: select an object first (or add one with + Object)"); return; }
    edit({ op: "paint", id: app.selected, z: app.z, points, width, erase });
  },
  onWheel: (dz) => setZ(app.z + dz),
  onView: (region, scale) => { $("zoom-label").textContent = `${Math.round(scale * 100)} %`; app.viewRegion = region; scheduleDetail(); },
  onCursor: (p) => { $("cursor").textContent = p ? `y ${Math.floor(p[0])}  x ${Math.floor(p[1])}` : ""; },
  onMessage: showError,
});
window.fmscope = { app, viewer };

// slices wider than 2048 px come downsampled; when zoomed in, the visible region is fetched at a finer step
let detailTimer = null;
function scheduleDetail() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => loadSlice(false), 180);
}

function sliceBase() {
  return app.sid ? `/api/sessions/${app.sid}` : app.image ? `/api/images/${app.image.id}` : null;
}

function wantedRegion() {
  const shape = app.image.shape.slice(-2);
  const whole = [0, 0, shape[0], shape[1]];
  if (Math.max(...shape) <= 2048 || !app.viewRegion) return whole;
  const [y0, x0, y1, x1] = app.viewRegion;
  if (y1 - y0 >= shape[0] && x1 - x0 >= shape[1]) return whole;
  const my = Math.round((y1 - y0) * 0.25); const mx = Math.round((x1 - x0) * 0.25);
  return [Math.max(0, y0 - my), Math.max(0, x0 - mx), Math.min(shape[0], y1 + my), Math.min(shape[1], x1 + mx)];
}

// every fetch of pixels gets a ticket; an answer that is not the latest asked for (another slice, region, session or
// an edit made since) is dropped instead of drawn over newer pixels
const tickets = { slice: 0, labels: 0 };

async function loadSlice(force = true) {
  const base = sliceBase();
  if (!base) return;
  const region = wantedRegion();
  const key = `${base}|${app.z}|${region}`;
  if (!force && key === app.rasterKey) return;
  app.rasterKey = key;
  const z = app.z;
  const q = `?region=${region.join(",")}`;
  const ticket = ++tickets.slice;
  const labelTicket = ++tickets.labels;
  await guarded(async () => {
    const [slice, labels] = await Promise.all([
      getRaw(`${base}/slice/${z}${q}`),
      app.sid ? getRaw(`${base}/labels/${z}${q}`) : Promise.resolve(null),
    ]);
    if (ticket !== tickets.slice) return; // the user moved on meanwhile
    viewer.setImage(slice);
    document.body.dataset.sliceZ = String(z);
    if (labelTicket !== tickets.labels) return; // newer labels (an edit) were asked for since
    drawLabels(labels, z);
  });
}

async function loadLabels() {
  if (!app.sid) return;
  const z = app.z;
  const region = wantedRegion();
  const ticket = ++tickets.labels;
  await guarded(async () => {
    const labels = await getRaw(`/api/sessions/${app.sid}/labels/${z}?region=${region.join(",")}`);
    if (ticket !== tickets.labels) return;
    drawLabels(labels, z);
  });
}

// labels of a session only ever move forward: an answer older than what is drawn for that slice is dropped
function drawLabels(labels, z) {
  const key = `${app.sid}|${z}`;
  if (labels && app.drawn && app.drawn.key === key && labels.revision < app.drawn.revision) return;
  app.drawn = labels ? { key, revision: labels.revision } : null;
  viewer.setLabels(labels);
  document.body.dataset.labelsZ = String(z);
  document.body.dataset.labelsRevision = labels ? String(labels.revision) : "";
}

function setZ(z, force = false) {
  if (!app.image) return;
  const next = Math.max(0, Math.min(app.depth - 1, Math.round(z)));
  if (next === app.z && !force) return;
  app.z = next;
  $("z").value = String(next);
  $("z-label").textContent = `z ${next} / ${app.depth - 1}`;
  publish();
  showPrompts();
  loadSlice();
  drawPlot();
  prefetch();
}

// features of the slice on screen are computed ahead of the first click
function prefetch() {
  clearTimeout(app.prefetch);
  if (!app.sid || app.busy) return;
  const z = app.z;
  app.prefetch = setTimeout(() => {
    if (app.busy || !app.sid) return;
    postJSON(`/api/sessions/${app.sid}/embed`, { slices: [z] }).catch(() => {});
  }, 350);
}

// ---- files, images, sessions ------------------------------------------------------------------------------------
async function listFiles(folder = app.folder) {
  await guarded(async () => {
    const listing = await getJSON(`/api/files?source=${app.source}&path=${encodeURIComponent(folder)}`);
    app.folder = folder;
    const crumbs = $("crumbs");
    crumbs.replaceChildren();
    const parts = folder ? folder.split("/") : [];
    const root = document.createElement("a");
    root.textContent = app.source === "data" ? (app.info ? app.info.data_root : "data") : "uploads";
    root.onclick = () => listFiles("");
    crumbs.append(root);
    parts.forEach((part, k) => {
      const a = document.createElement("a");
      a.textContent = part;
      a.onclick = () => listFiles(parts.slice(0, k + 1).join("/"));
      crumbs.append(" / ", a);
    });
    const list = $("files");
    list.replaceChildren();
    for (const entry of listing.entries) {
      const li = document.createElement("li");
      li.dataset.path = entry.path;
      li.dataset.kind = entry.kind;
      const name = document.createElement("span");
      name.className = "name";
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = entry.kind === "folder" ? "\u25B8" : entry.kind === "image" ? "\u25A3" : "";
      name.textContent = entry.name;
      li.append(kind, name);
      if (entry.kind === "folder") {
        name.onclick = () => listFiles(entry.path);
        if (entry.slices) li.append(button("open stack", () => openImage(entry.path)));
      } else if (entry.kind === "image") {
        name.onclick = () => openImage(entry.path);
        name.title = "open";
        li.append(button("GT", () => { $("gt-path").value = entry.path; $("gt-path").dataset.source = app.source; }, "use as ground truth"));
      } else {
        li.classList.add("muted");
      }
      list.append(li);
    }
  });
}

async function openImage(path, channel = null) {
  await guarded(async () => {
    let info;
    try {
      info = await postJSON("/api/images", { source: app.source, path, channel });
    } catch (e) {
      if (e instanceof ApiError && /channels/.test(e.message)) {
        $("channel-row").hidden = false;
        $("channel").onchange = () => openImage(path, Number($("channel").value));
      }
      throw e;
    }
    clearError();
    app.session = null; app.sid = null; app.selected = null;
    app.image = { ...info, path, sourceName: app.source };
    showImage();
    $("new-session").disabled = false;
    renderSession();
  });
}

function showImage() {
  const info = app.image;
  $("empty").hidden = true;
  const shape = info.shape;
  app.depth = info.axes.includes("Z") ? shape[info.axes.indexOf("Z")] : 1;
  const spacing = info.spacing.map((s) => +s.toPrecision(4)).join(" x ");
  $("image-info").hidden = false;
  $("image-info").textContent = `${info.name}\nshape ${shape.join(" x ")} (${info.axes})  ${info.dtype}\n`
    + `spacing ${spacing}${info.unit ? " " + info.unit : ""}  ${info.format}${info.lazy ? ", read lazily" : ""}`;
  $("z").max = String(app.depth - 1);
  $("z-from").value = "0"; $("z-to").value = String(app.depth - 1);
  app.window = [...info.histogram.window];
  $("win-lo").value = String(+app.window[0].toPrecision(6));
  $("win-hi").value = String(+app.window[1].toPrecision(6));
  viewer.setWindow(...app.window);
  drawHistogram($("histogram"), info.histogram, ...app.window);
  viewer.setShape(shape.slice(-2));
  app.rasterKey = "";
  setZ(Math.min(app.z, app.depth - 1), true);
}

async function listSessions() {
  await guarded(async () => {
    const { sessions } = await getJSON("/api/sessions");
    const list = $("sessions");
    list.replaceChildren();
    for (const s of sessions) {
      const li = document.createElement("li");
      li.dataset.session = s.id;
      if (s.id === app.sid) li.classList.add("selected");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `${s.name}  (${s.backend ? s.backend.method : "?"}, ${s.steps || 0} edits)`;
      name.title = s.error || `${s.created || ""}`;
      name.onclick = () => openSession(s.id);
      li.append(name);
      list.append(li);
    }
  });
}

async function newSession() {
  if (!app.image) return;
  const backend = backendSpec();
  await runJob("new session", () => postJSON("/api/sessions", {
    image: { source: app.image.sourceName, path: app.image.path, channel: app.image.channel },
    backend, mode: $("new-mode").value,
  }), async (result) => { await openSession(result.session); await listSessions(); });
}

async function openSession(sid) {
  await guarded(async () => {
    const state = await getJSON(`/api/sessions/${sid}`);
    app.sid = sid;
    localStorage.setItem("fmscope.session", sid);
    const image = state.image;
    app.image = { ...image, id: null, path: image.source.split(":").slice(1).join(":"), sourceName: image.source.split(":")[0] };
    applyState(state);
    app.z = Number(localStorage.getItem(`fmscope.z.${sid}`) || 0); // showImage clamps it to the image's depth
    showImage();
    listSessions();
  });
}

async function refreshSession() {
  if (!app.sid) return;
  const state = await getJSON(`/api/sessions/${app.sid}`);
  applyState(state);
  await loadLabels();
}

function applyState(state) {
  if (app.session && app.session.id === state.id && state.revision < app.session.revision) return; // stale
  app.session = state;
  if (app.selected != null && !state.objects.some((o) => o.id === app.selected)) app.selected = null;
  if (app.selected == null && state.objects.length) app.selected = state.objects[state.objects.length - 1].id;
  renderSession();
  publish();
}

// ---- the session's panels ---------------------------------------------------------------------------------------
function renderSession() {
  const s = app.session;
  const on = !!s;
  $("session-name").textContent = s ? `${s.name} \u00b7 ${s.backend.name}${s.mode === "semantic" ? " \u00b7 phases" : ""}` : app.image ? "image (no session)" : "no session";
  $("saved").textContent = s ? `saved \u00b7 revision ${s.revision}` : "";
  for (const id of ["new-object", "semantic", "propagate-all", "embed-all", "ex-labels", "ex-morpho", "ex-prompts", "ex-record", "gt-run"]) $(id).disabled = !on || app.busy;
  const sel = s && app.selected != null ? s.objects.find((o) => o.id === app.selected) : null;
  for (const id of ["inside", "propagate", "accept-slice", "accept-object", "interpolate", "clear-slice"]) $(id).disabled = !sel || app.busy;
  const accepted = !!s && s.objects.some((o) => o.accepted || o.accepted_slices.length);
  $("train").disabled = !accepted || app.busy;
  $("train").title = accepted ? "Fine-tune a segmenter on the accepted slices, then propose every slice with nothing accepted (one undoable step)" : "accept the slices that are right first (Accept slice)";
  $("undo").disabled = !s || !s.can_undo || app.busy;
  $("redo").disabled = !s || !s.can_redo || app.busy;
  $("undo").title = s && s.can_undo ? `Undo ${s.undo[s.undo.length - 1].action} (Ctrl+Z)` : "Undo (Ctrl+Z)";
  $("redo").title = s && s.can_redo ? `Redo ${s.redo[0].action} (Ctrl+Shift+Z)` : "Redo (Ctrl+Shift+Z)";
  $("semantic").checked = !!s && s.mode === "semantic";
  $("find").disabled = !on || !app.info || !app.info.grounding.available;
  const spec = s && app.info ? app.info.backends.find((b) => b.name === s.backend.name) : null;
  const automatic = !!spec && spec.abilities.includes("automatic");
  for (const id of ["auto-slice", "auto-stack"]) {
    $(id).disabled = !on || app.busy || !automatic;
    $(id).title = automatic ? $(id).title.replace(/ \(unavailable.*$/, "") : "segment everything needs a backend with an automatic mode (sam)";
  }
  if (s) syncBackend(s.backend);
  const list = $("objects");
  list.replaceChildren();
  for (const o of s ? s.objects : []) {
    const li = document.createElement("li");
    li.dataset.object = String(o.id);
    if (o.id === app.selected) li.classList.add("selected");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = cssColour(o.id);
    const name = document.createElement("span");
    name.className = "name";
    const where = o.slices.length ? `slices ${rangeText(o.slices)}` : "no mask yet";
    name.textContent = `${o.parent ? "  \u21B3 " : ""}#${o.id}  ${where}`;
    name.onclick = () => select(o.id);
    li.append(sw, name);
    if (o.accepted) { const b = document.createElement("span"); b.className = "badge"; b.textContent = "accepted"; li.append(b); }
    li.append(button("\u2715", () => edit({ op: "delete_object", id: o.id }), "delete this object"));
    list.append(li);
  }
  if (sel) {
    const accepted = sel.accepted_slices.includes(app.z);
    $("accept-slice").textContent = accepted ? "Release slice" : "Accept slice";
  }
  showPrompts();
  drawPlot();
  publish();
}

function select(id) {
  app.selected = id;
  viewer.setSelected(id);
  renderSession();
}

function showPrompts() {
  const s = app.session;
  const prompts = { points: [], box: null, strokes: [], others: [] };
  if (s) {
    for (const o of s.objects) {
      const p = o.prompts;
      const mine = o.id === app.selected;
      for (const [key, positive] of [["positive", true], ["negative", false]]) {
        for (const pt of p[key] || []) {
          if (Math.round(pt[0]) !== app.z) continue;
          (mine ? prompts.points : prompts.others).push({ y: pt[1], x: pt[2], positive, id: o.id });
        }
      }
      if (mine && p.box && Math.round(p.box[0]) === app.z) prompts.box = p.box.slice(1);
      if (mine) {
        for (const st of p.strokes || []) {
          if (Math.round(st.points[0][0]) === app.z) prompts.strokes.push({ ...st, points: st.points.map((q) => q.slice(1)) });
        }
      }
    }
  }
  viewer.setPrompts(prompts);
  viewer.setSelected(app.selected);
}

// ---- edits -------------------------------------------------------------------------------------------------------
function edit(change) {
  // edits go one after the other, each with the revision the page has seen; data-pending counts those not done
  app.pending += 1;
  document.body.dataset.pending = String(app.pending);
  app.queue = app.queue.catch(() => null).then(() => guarded(async () => {
    if (!app.sid) throw new Error("open or start a session first (New session)");
    const state = await postJSON(`/api/sessions/${app.sid}/edit`, { ...change, revision: app.session.revision });
    clearError();
    if (change.op === "new_object" && typeof state.result === "number") app.selected = state.result;
    applyState(state);
    await loadLabels();
    return state;
  })).finally(() => {
    app.pending -= 1;
    document.body.dataset.pending = String(app.pending);
  });
  return app.queue;
}

function withObject(then) {
  if (!app.sid) { showError("start a session first: open an image, then New session"); return; }
  if (app.selected != null) { then(app.selected); return; }
  edit({ op: "new_object" }).then((state) => { if (state && app.selected != null) then(app.selected); });
}

// ---- jobs ----------------------------------------------------------------------------------------------------------
async function runJob(label, start, onDone) {
  app.busy = true;
  renderSession();
  document.body.dataset.job = "running";
  $("job").hidden = false;
  $("job-label").textContent = label;
  $("job-progress").value = 0;
  let job = null;
  const finished = await guarded(async () => {
    job = await start();
    $("job-cancel").onclick = () => postJSON(`/api/jobs/${job.id}/cancel`).catch(() => {});
    return follow(job, (st) => {
      $("job-progress").max = st.total || 1;
      $("job-progress").value = st.total ? st.done : 0;
      $("job-count").textContent = st.total ? `${st.done} / ${st.total}` : st.message || "";
      if (st.message) $("job-label").textContent = `${label}: ${st.message}`;
    });
  });
  app.busy = false;
  $("job").hidden = true;
  document.body.dataset.job = finished ? finished.state : "failed";
  if (finished && finished.state === "failed") showError(finished.error);
  if (finished && finished.state === "cancelled") showError(`${label}: cancelled; nothing of it was kept`);
  if (finished && finished.state === "done" && onDone) await onDone(finished.result);
  renderSession();
  return finished;
}

function enhancement() {
  const on = (id) => $(id).checked;
  if (!on("en-bridge") && !on("en-resegment") && !on("en-fill") && !on("en-filter")) return null;
  return {
    bridge: on("en-bridge") ? 2 : 0, resegment: on("en-resegment"), fill: on("en-fill"),
    min_area: on("en-filter") ? Number($("en-min-area").value) || 0 : 0,
  };
}

async function propagate(all) {
  const objects = all ? null : [app.selected];
  const zRange = [Number($("z-from").value), Number($("z-to").value)];
  await runJob(all ? "propagating all objects" : `propagating #${app.selected}`, () => postJSON(`/api/sessions/${app.sid}/propagate`, {
    objects, z_range: zRange, stop_iou: Number($("stop-iou").value), enhance: enhancement(),
  }), async (result) => {
    await refreshSession();
    if (result.skipped && result.skipped.length) showError(`${result.skipped.length} slice(s) edited during the propagation were kept as edited`);
  });
}

async function trainOnAccepted() {
  const epochs = Number($("train-epochs").value) || 20;
  await runJob("train on accepted", () => postJSON(`/api/sessions/${app.sid}/train`, {
    revision: app.session.revision, init: $("train-init").value, finetune: { epochs },
  }), async (r) => {
    await refreshSession();
    $("train-result").textContent = `round ${r.round}: trained on slice(s) ${r.trained_on.join(", ")}, validation Dice `
      + `${r.best_score.toFixed(3)}; proposed ${r.proposed.length} slice(s) in ${r.seconds.toFixed(0)} s (Undo takes them back)\n`
      + `model: ${r.model_dir}`;
  });
}

// ---- plots, exports, ground truth ------------------------------------------------------------------------------------
async function drawPlot() {
  const svg = $("plot");
  if (!app.sid || app.selected == null) { plotStats(svg, [], app.depth, app.z, setZ); return; }
  const revision = app.session.revision;
  const key = `${app.sid}|${app.selected}|${revision}`;
  if (app.statsKey !== key) {
    const data = await guarded(() => getJSON(`/api/sessions/${app.sid}/stats/${app.selected}`));
    const now = app.session ? `${app.sid}|${app.selected}|${app.session.revision}` : "";
    if (!data || now !== key) return; // another object or revision was asked for meanwhile
    app.stats = data.slices;
    app.statsKey = key;
  }
  plotStats(svg, app.stats, app.depth, app.z, setZ);
}

// ---- wiring ------------------------------------------------------------------------------------------------------
function wire() {
  $("file-source").onchange = () => { app.source = $("file-source").value; listFiles(""); };
  $("upload").onchange = async () => {
    const file = $("upload").files[0];
    if (!file) return;
    if (app.info && file.size > app.info.max_upload) { showError(`upload: ${file.name} is larger than the limit of ${(app.info.max_upload / 2 ** 20).toFixed(0)} MiB`); return; }
    const done = await guarded(() => upload(file));
    if (done) { app.source = "upload"; $("file-source").value = "upload"; await listFiles(""); await openImage(done.path); }
  };
  $("new-session").onclick = newSession;
  $("new-object").onclick = () => edit({ op: "new_object" });
  $("inside").onclick = () => edit({ op: "new_object", parent: app.selected });
  $("semantic").onchange = () => edit({ op: "set_mode", mode: $("semantic").checked ? "semantic" : "instance" });
  $("clear-slice").onclick = () => edit({ op: "clear_slice", id: app.selected, z: app.z });
  $("undo").onclick = () => edit({ op: "undo" });
  $("redo").onclick = () => edit({ op: "redo" });
  $("propagate").onclick = () => propagate(false);
  $("propagate-all").onclick = () => propagate(true);
  $("train").onclick = trainOnAccepted;
  $("accept-object").onclick = () => edit({ op: "accept", id: app.selected });
  $("accept-slice").onclick = () => {
    const o = app.session.objects.find((x) => x.id === app.selected);
    edit({ op: "accept_slice", id: app.selected, z: app.z, accepted: !(o && o.accepted_slices.includes(app.z)) });
  };
  $("interpolate").onclick = () => {
    const o = app.session.objects.find((x) => x.id === app.selected);
    const keys = [...o.accepted_slices].sort((a, b) => a - b);
    const below = keys.filter((k) => k < app.z).pop();
    const above = keys.find((k) => k > app.z);
    if (below == null || above == null) { showError("interpolate: accept a slice above and one below this one first"); return; }
    edit({ op: "interpolate", id: app.selected, z0: below, z1: above });
  };
  const everything = (stack) => runJob(stack ? "segmenting everything in the stack" : "segmenting everything",
    () => postJSON(`/api/sessions/${app.sid}/automatic`, { z: app.z, stack }), refreshSession);
  $("auto-slice").onclick = () => everything(false);
  $("auto-stack").onclick = () => everything(true);
  $("embed-all").onclick = () => runJob("computing the features of every slice", () => postJSON(`/api/sessions/${app.sid}/embed`, {}));
  $("find").onclick = () => runJob(`finding '${$("phrase").value}'`, () => postJSON(`/api/sessions/${app.sid}/text`, { phrase: $("phrase").value, z: app.z }), refreshSession);
  $("fm-apply").onclick = () => (app.sid ? setBackend() : null);
  $("ex-labels").onclick = () => exportWhat("labels");
  $("ex-morpho").onclick = () => exportWhat("morphometry");
  $("ex-prompts").onclick = () => exportWhat("prompts");
  $("ex-record").onclick = () => exportWhat("record");
  $("gt-run").onclick = score;
  $("z").oninput = () => setZ(Number($("z").value));
  $("z-prev").onclick = () => setZ(app.z - 1);
  $("z-next").onclick = () => setZ(app.z + 1);
  $("zoom-fit").onclick = () => viewer.fit();
  const windowChanged = () => {
    app.window = [Number($("win-lo").value), Number($("win-hi").value)];
    viewer.setWindow(...app.window);
    if (app.image) drawHistogram($("histogram"), app.image.histogram, ...app.window);
  };
  $("win-lo").onchange = windowChanged;
  $("win-hi").onchange = windowChanged;
  $("win-auto").onclick = () => {
    if (!app.image) return;
    [$("win-lo").value, $("win-hi").value] = app.image.histogram.window.map((v) => String(+v.toPrecision(6)));
    windowChanged();
  };
  $("brush").onchange = () => { viewer.brush = Math.max(1, Number($("brush").value) || 5); };
  for (const b of $("tools").querySelectorAll("button")) b.onclick = () => setTool(b.dataset.tool);
  document.addEventListener("keydown", keys);
  window.addEventListener("beforeunload", () => { if (app.sid) localStorage.setItem(`fmscope.z.${app.sid}`, String(app.z)); });
}

function setTool(tool) {
  viewer.tool = tool;
  for (const b of $("tools").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tool === tool);
  document.body.dataset.tool = tool;
}

function keys(e) {
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
  const k = e.key;
  if ((e.ctrlKey || e.metaKey) && (k === "z" || k === "Z")) { e.preventDefault(); if (app.sid) edit({ op: e.shiftKey ? "redo" : "undo" }); return; }
  if ((e.ctrlKey || e.metaKey) && (k === "y" || k === "Y")) { e.preventDefault(); if (app.sid) edit({ op: "redo" }); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const tools = { p: "point", b: "box", s: "stroke", d: "paint", e: "erase", h: "pan" };
  if (k === "ArrowRight" || k === "ArrowDown" || k === "PageDown" || k === ".") { e.preventDefault(); setZ(app.z + 1); }
  else if (k === "ArrowLeft" || k === "ArrowUp" || k === "PageUp" || k === ",") { e.preventDefault(); setZ(app.z - 1); }
  else if (k === "Home") setZ(0);
  else if (k === "End") setZ(app.depth - 1);
  else if (k === "+" || k === "=") viewer.zoomAt(1.25, viewer.canvases.image.width / 2, viewer.canvases.image.height / 2);
  else if (k === "-") viewer.zoomAt(0.8, viewer.canvases.image.width / 2, viewer.canvases.image.height / 2);
  else if (k === "0") viewer.fit();
  else if (k === "a" && !$("accept-slice").disabled) $("accept-slice").click();
  else if (k === "n" && app.sid) edit({ op: "new_object" });
  else if (tools[k.toLowerCase()]) setTool(tools[k.toLowerCase()]);
}

// another tab or window may change the same session: poll its revision while idle
async function watch() {
  if (app.sid && !app.busy && document.visibilityState === "visible") {
    try {
      const state = await getJSON(`/api/sessions/${app.sid}`);
      if (app.session && state.id === app.sid && state.revision > app.session.revision) { // newer only: a poll
        // answered before one of our own edits must not roll the page back
        applyState(state);
        await loadLabels();
        document.body.dataset.refreshed = String(state.revision);
      }
    } catch (e) { /* shown on the next action */ }
  }
  setTimeout(watch, 2500);
}

async function start() {
  hooks.onConflict = refreshSession;
  Object.assign(actions, { applyState, runJob, setZ });
  wire();
  setTool("point");
  await guarded(async () => {
    app.info = await getJSON("/api/info");
    fillBackends();
  });
  await listFiles("");
  await listSessions();
  const last = localStorage.getItem("fmscope.session");
  const known = [...$("sessions").children].some((li) => li.dataset.session === last);
  if (last && known) await openSession(last);
  else if (app.info && app.info.open_path) await openImage(app.info.open_path);
  document.body.dataset.ready = "1";
  publish();
  watch();
}

start();
