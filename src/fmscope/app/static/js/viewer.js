// The slice view: three stacked canvases (image, labels, prompts), zoom and pan, and the pointer tools.
//
// Coordinates: image pixels (y, x) at full resolution; a raster (image or labels) covers `region` = [y0, x0, y1, x1]
// with `step` full-resolution pixels per raster pixel. `scale` is screen pixels per image pixel.

import { windowed, coloured, cssColour } from "./render.js";

const HANDLE = 7; // screen pixels around a box corner or edge that grab it

export class Viewer {
  constructor(root, callbacks) {
    this.root = root;
    this.cb = callbacks;
    this.canvases = {
      image: root.querySelector("#canvas-image"),
      labels: root.querySelector("#canvas-labels"),
      prompts: root.querySelector("#canvas-prompts"),
    };
    this.offImage = document.createElement("canvas");
    this.offLabels = document.createElement("canvas");
    this.image = null; // raw slice
    this.labels = null; // raw label plane
    this.window = [0, 255];
    this.selected = null;
    this.prompts = { points: [], box: null, strokes: [], others: [] };
    this.tool = "point";
    this.brush = 5;
    this.scale = 1;
    this.offset = [0, 0];
    this.shape = null; // [height, width] of the full-resolution slice
    this.drag = null;
    this.space = false;
    this.bind();
    new ResizeObserver(() => this.resize()).observe(root);
  }

  // ---- geometry -------------------------------------------------------------------------------------------
  resize() {
    const { clientWidth: w, clientHeight: h } = this.root;
    for (const c of Object.values(this.canvases)) {
      if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    }
    if (this.shape && !this.fitted) this.fit();
    this.draw();
  }

  setShape(shape) {
    const changed = !this.shape || this.shape[0] !== shape[0] || this.shape[1] !== shape[1];
    this.shape = shape;
    if (changed) { this.fitted = false; this.fit(); }
  }

  fit() {
    if (!this.shape) return;
    const { width, height } = this.canvases.image;
    if (!width || !height) return;
    const [h, w] = this.shape;
    this.scale = Math.min(width / w, height / h) * 0.98;
    this.offset = [(width - w * this.scale) / 2, (height - h * this.scale) / 2];
    this.fitted = true;
    this.changed();
  }

  toImage(sx, sy) {
    return [(sy - this.offset[1]) / this.scale, (sx - this.offset[0]) / this.scale];
  }

  toScreen(y, x) {
    return [this.offset[0] + x * this.scale, this.offset[1] + y * this.scale];
  }

  // The full-resolution region on screen: [y0, x0, y1, x1], clipped to the slice.
  visible() {
    if (!this.shape) return null;
    const { width, height } = this.canvases.image;
    const [y0, x0] = this.toImage(0, 0);
    const [y1, x1] = this.toImage(width, height);
    const clip = (v, n) => Math.max(0, Math.min(n, v));
    return [clip(Math.floor(y0), this.shape[0]), clip(Math.floor(x0), this.shape[1]),
      clip(Math.ceil(y1), this.shape[0]), clip(Math.ceil(x1), this.shape[1])];
  }

  zoomAt(factor, sx, sy) {
    const [y, x] = this.toImage(sx, sy);
    this.scale = Math.min(64, Math.max(0.01, this.scale * factor));
    this.offset = [sx - x * this.scale, sy - y * this.scale];
    this.fitted = false;
    this.changed();
  }

  changed() {
    this.draw();
    if (this.cb.onView) this.cb.onView(this.visible(), this.scale);
  }

  // ---- rasters --------------------------------------------------------------------------------------------
  setImage(slice) {
    this.image = slice;
    this.paintImage();
  }

  setWindow(lo, hi) {
    this.window = [lo, hi];
    this.paintImage();
  }

  paintImage() {
    if (!this.image) return;
    const s = this.image;
    this.offImage.width = s.width;
    this.offImage.height = s.height;
    this.offImage.getContext("2d").putImageData(windowed(s, this.window[0], this.window[1]), 0, 0);
    this.draw();
  }

  setLabels(labels) {
    this.labels = labels;
    this.paintLabels();
  }

  setSelected(id) {
    this.selected = id;
    this.paintLabels();
  }

  paintLabels() {
    if (!this.labels) { this.draw(); return; }
    const l = this.labels;
    this.offLabels.width = l.width;
    this.offLabels.height = l.height;
    this.offLabels.getContext("2d").putImageData(coloured(l, this.selected), 0, 0);
    this.draw();
  }

  setPrompts(prompts) {
    this.prompts = prompts;
    this.drawPrompts();
  }

  clear() {
    this.image = null;
    this.labels = null;
    this.draw();
  }

  // ---- drawing --------------------------------------------------------------------------------------------
  drawRaster(canvas, off, raster) {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!raster) return;
    ctx.imageSmoothingEnabled = false;
    const [y0, x0] = raster.region;
    const s = this.scale * raster.step;
    ctx.setTransform(s, 0, 0, s, this.offset[0] + x0 * this.scale, this.offset[1] + y0 * this.scale);
    ctx.drawImage(off, 0, 0);
  }

  draw() {
    this.drawRaster(this.canvases.image, this.offImage, this.image);
    this.drawRaster(this.canvases.labels, this.offLabels, this.labels);
    this.drawPrompts();
  }

  drawPrompts() {
    const canvas = this.canvases.prompts;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const p = this.prompts;
    for (const o of p.others) this.drawPoint(ctx, o.y, o.x, o.positive, cssColour(o.id), 3);
    for (const s of p.strokes) {
      ctx.strokeStyle = s.positive ? "rgba(91,214,139,0.85)" : "rgba(255,107,107,0.85)";
      ctx.lineWidth = Math.max(1, s.width * this.scale);
      ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath();
      s.points.forEach(([y, x], k) => {
        const [sx, sy] = this.toScreen(y + 0.5, x + 0.5);
        if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
      });
      if (s.points.length === 1) ctx.lineTo(...this.toScreen(s.points[0][0] + 0.5, s.points[0][1] + 0.6));
      ctx.stroke();
    }
    const box = this.drag && this.drag.box ? this.drag.box : p.box;
    if (box) {
      const [ax, ay] = this.toScreen(box[0], box[1]);
      const [bx, by] = this.toScreen(box[2], box[3]);
      ctx.strokeStyle = "#ffd24e"; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
      ctx.strokeRect(ax, ay, bx - ax, by - ay);
      ctx.setLineDash([]);
      ctx.fillStyle = "#ffd24e";
      for (const [hx, hy] of [[ax, ay], [bx, ay], [ax, by], [bx, by]]) ctx.fillRect(hx - 3, hy - 3, 6, 6);
    }
    for (const pt of p.points) this.drawPoint(ctx, pt.y, pt.x, pt.positive, null, 6);
    if (this.drag && this.drag.line && this.drag.line.length) {
      const erase = this.drag.kind === "erase" || (this.drag.kind === "stroke" && !this.drag.positive);
      ctx.strokeStyle = erase ? "rgba(255,107,107,0.7)" : "rgba(78,161,255,0.7)";
      ctx.lineWidth = Math.max(1, this.brush * this.scale);
      ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath();
      this.drag.line.forEach(([y, x], k) => {
        const [sx, sy] = this.toScreen(y + 0.5, x + 0.5);
        if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
      });
      ctx.stroke();
    }
  }

  drawPoint(ctx, y, x, positive, fill, radius) {
    const [sx, sy] = this.toScreen(y + 0.5, x + 0.5);
    ctx.beginPath();
    ctx.arc(sx, sy, radius, 0, 2 * Math.PI);
    ctx.fillStyle = fill || (positive ? "#5bd68b" : "#ff6b6b");
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#000";
    ctx.stroke();
  }

  // ---- pointer tools --------------------------------------------------------------------------------------
  bind() {
    const c = this.canvases.prompts;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => this.down(e));
    c.addEventListener("pointermove", (e) => this.move(e));
    c.addEventListener("pointerup", (e) => this.up(e));
    const drop = () => { if (this.drag) { this.drag = null; this.drawPrompts(); } }; // the browser took the pointer
    c.addEventListener("pointercancel", drop);
    c.addEventListener("lostpointercapture", (e) => { if (this.drag && e.buttons !== 0) drop(); });
    c.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    window.addEventListener("keydown", (e) => { if (e.code === "Space" && this.isTyping(e) === false) { this.space = true; this.root.classList.add("panning"); } });
    window.addEventListener("keyup", (e) => { if (e.code === "Space") { this.space = false; this.root.classList.remove("panning"); } });
  }

  isTyping(e) {
    const t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
  }

  position(e) {
    const r = this.canvases.prompts.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  inside(y, x) {
    return this.shape && y >= 0 && x >= 0 && y < this.shape[0] && x < this.shape[1];
  }

  boxGrab(sx, sy) {
    const box = this.prompts.box;
    if (!box) return null;
    const [ax, ay] = this.toScreen(box[0], box[1]);
    const [bx, by] = this.toScreen(box[2], box[3]);
    const near = (a, b) => Math.abs(a - b) <= HANDLE;
    const edges = { top: near(sy, ay), bottom: near(sy, by), left: near(sx, ax), right: near(sx, bx) };
    const within = sx > ax - HANDLE && sx < bx + HANDLE && sy > ay - HANDLE && sy < by + HANDLE;
    if (!within) return null;
    if (edges.top || edges.bottom || edges.left || edges.right) return { resize: edges };
    return { move: true };
  }

  down(e) {
    if (!this.shape) return;
    this.root.focus();
    const [sx, sy] = this.position(e);
    const [y, x] = this.toImage(sx, sy);
    this.canvases.prompts.setPointerCapture(e.pointerId);
    if (e.button === 1 || this.tool === "pan" || this.space) {
      this.drag = { kind: "pan", start: [sx, sy], offset: [...this.offset] };
      return;
    }
    if (this.tool === "box") {
      const grab = this.boxGrab(sx, sy);
      const start = this.prompts.box ? [...this.prompts.box] : null;
      this.drag = grab && start ? { kind: "box", grab, origin: [y, x], start, box: start }
        : { kind: "box", origin: [y, x], box: null };
      return;
    }
    if (this.tool === "stroke" || this.tool === "paint" || this.tool === "erase") {
      this.drag = { kind: this.tool, positive: !(e.shiftKey || e.button === 2), line: [[y, x]] };
      this.drawPrompts();
      return;
    }
    this.drag = { kind: "point", at: [y, x], screen: [sx, sy], positive: !(e.shiftKey || e.button === 2) };
  }

  move(e) {
    const [sx, sy] = this.position(e);
    const [y, x] = this.toImage(sx, sy);
    if (this.cb.onCursor) this.cb.onCursor(this.inside(y, x) ? [y, x] : null);
    const d = this.drag;
    if (!d) return;
    if (d.kind === "pan") {
      this.offset = [d.offset[0] + sx - d.start[0], d.offset[1] + sy - d.start[1]];
      this.fitted = false;
      this.draw();
    } else if (d.kind === "box") {
      const clampY = (v) => Math.max(0, Math.min(this.shape[0], v));
      const clampX = (v) => Math.max(0, Math.min(this.shape[1], v));
      if (d.grab && d.grab.move) {
        const dy = y - d.origin[0]; const dx = x - d.origin[1];
        const h = d.start[2] - d.start[0]; const w = d.start[3] - d.start[1];
        const y0 = Math.max(0, Math.min(this.shape[0] - h, d.start[0] + dy));
        const x0 = Math.max(0, Math.min(this.shape[1] - w, d.start[1] + dx));
        d.box = [y0, x0, y0 + h, x0 + w];
      } else if (d.grab && d.grab.resize) {
        const b = [...d.start]; const r = d.grab.resize;
        if (r.top) b[0] = clampY(y); if (r.bottom) b[2] = clampY(y);
        if (r.left) b[1] = clampX(x); if (r.right) b[3] = clampX(x);
        d.box = [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
      } else {
        const [oy, ox] = d.origin;
        d.box = [clampY(Math.min(oy, y)), clampX(Math.min(ox, x)), clampY(Math.max(oy, y)), clampX(Math.max(ox, x))];
      }
      this.drawPrompts();
    } else if (d.line) {
      const last = d.line[d.line.length - 1];
      if (Math.hypot(last[0] - y, last[1] - x) * this.scale >= 2) {
        d.line.push([y, x]);
        this.drawPrompts();
      }
    }
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.kind === "pan") { this.changed(); return; }
    if (d.kind === "box") {
      this.drawPrompts();
      if (!d.box) {
        if (this.cb.onMessage) this.cb.onMessage("box: drag from one corner to the other (a click is a box of zero area)");
        return;
      }
      if (d.start && d.box.every((v, k) => v === d.start[k])) return; // grabbed and let go: nothing changed
      const box = d.box.map((v) => Math.round(v));
      if (box[2] - box[0] < 2 || box[3] - box[1] < 2) {
        if (this.cb.onMessage) this.cb.onMessage("box: drag a box of at least 2 x 2 pixels");
        return;
      }
      this.cb.onBox(box);
      return;
    }
    if (d.line) {
      const clip = (v, n) => Math.max(0, Math.min(n - 1, Math.round(v)));
      const pts = d.line.map(([y, x]) => [clip(y, this.shape[0]), clip(x, this.shape[1])]);
      if (d.kind === "stroke") this.cb.onStroke(pts, d.positive, this.brush);
      else this.cb.onPaint(pts, d.kind === "erase", this.brush);
      this.drawPrompts();
      return;
    }
    const [y, x] = d.at;
    const hit = this.prompts.points.find((p) => Math.hypot(...this.toScreen(p.y + 0.5, p.x + 0.5).map((v, k) => v - d.screen[k])) <= 7);
    if (hit) { this.cb.onRemovePoint(hit.y, hit.x); return; }
    if (!this.inside(y, x)) {
      if (this.cb.onMessage) this.cb.onMessage(`point (${y.toFixed(0)}, ${x.toFixed(0)}) is outside the image`);
      return;
    }
    this.cb.onPoint(Math.floor(y), Math.floor(x), d.positive);
  }

  wheel(e) {
    e.preventDefault();
    const [sx, sy] = this.position(e);
    if (e.ctrlKey || e.metaKey || e.altKey) this.zoomAt(e.deltaY < 0 ? 1.2 : 1 / 1.2, sx, sy);
    else if (this.cb.onWheel) this.cb.onWheel(e.deltaY > 0 ? 1 : -1);
  }
}
