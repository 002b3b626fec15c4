// What every part of the page shares: the page's state, messages, and small DOM helpers.

import { ApiError } from "./api.js";

export const $ = (id) => document.getElementById(id);
export const app = {
  info: null, source: "data", folder: "", image: null, session: null, sid: null, z: 0, depth: 1, selected: null,
  window: [0, 255], busy: false, queue: Promise.resolve(), pending: 0, stats: [], exports: [], prefetch: null,
  viewRegion: null, rasterKey: "",
};

// ---- messages --------------------------------------------------------------------------------------------------
export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  document.body.dataset.error = message;
}
export function clearError() { $("error").hidden = true; document.body.dataset.error = ""; }
$("error-close").onclick = clearError;

// set by main.js: what to do when the server says the page's revision is stale (reload the session)
export const hooks = { onConflict: async () => {} };

export async function guarded(work) {
  try {
    return await work();
  } catch (e) {
    if (e instanceof ApiError && e.status === 409 && app.sid) {
      showError(e.message);
      try { await hooks.onConflict(); } catch (again) { showError(`${e.message} (and reloading failed: ${again.message})`); }
      return null;
    }
    showError(e.message || String(e));
    return null;
  }
}

export function publish() {
  const d = document.body.dataset;
  d.session = app.sid || "";
  d.revision = app.session ? String(app.session.revision) : "";
  d.z = String(app.z);
  d.selected = app.selected == null ? "" : String(app.selected);
  d.objects = app.session ? String(app.session.objects.length) : "0";
  d.busy = app.busy ? "1" : "0";
  $("viewer").dataset.z = String(app.z);
}

export function button(label, onclick, title = "") {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.onclick = (e) => { e.stopPropagation(); onclick(); };
  return b;
}

export function rangeText(zs) {
  if (zs.length <= 3) return zs.join(", ");
  return `${zs[0]}\u2013${zs[zs.length - 1]} (${zs.length})`;
}

