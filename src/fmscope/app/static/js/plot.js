// Small SVG plots: per-slice area and box height with the outliers marked, and per-slice Dice against ground truth.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function frame(svg, depth) {
  svg.replaceChildren();
  const width = svg.clientWidth || Number(svg.getAttribute("width"));
  const height = svg.clientHeight || Number(svg.getAttribute("height"));
  const pad = { l: 6, r: 6, t: 8, b: 16 };
  const x = (z) => pad.l + (depth > 1 ? (z / (depth - 1)) * (width - pad.l - pad.r) : (width - pad.l - pad.r) / 2);
  return { width, height, pad, x };
}

function line(svg, points, colour) {
  if (points.length === 0) return;
  el("polyline", { points: points.map((p) => p.join(",")).join(" "), fill: "none", stroke: colour, "stroke-width": 1.5 }, svg);
}

function cursor(svg, f, z) {
  el("line", { x1: f.x(z), x2: f.x(z), y1: f.pad.t - 4, y2: f.height - f.pad.b, stroke: "#ffffff55", "stroke-dasharray": "3 3" }, svg);
}

function clicks(svg, f, depth, onPick) {
  svg.onclick = (e) => {
    const r = svg.getBoundingClientRect();
    const frac = (e.clientX - r.left - f.pad.l) / (f.width - f.pad.l - f.pad.r);
    const z = Math.max(0, Math.min(depth - 1, Math.round(frac * (depth - 1))));
    onPick(z);
  };
}

// rows: [{z, area, height, outlier, accepted, key}]
export function plotStats(svg, rows, depth, z, onPick) {
  const f = frame(svg, depth);
  svg.dataset.outliers = rows.filter((r) => r.outlier).map((r) => r.z).join(",");
  svg.dataset.slices = rows.map((r) => r.z).join(",");
  if (!rows.length) {
    el("text", { x: 8, y: f.height / 2, fill: "#8b919c", "font-size": 11 }, svg).textContent = "no slice holds the selected object";
    cursor(svg, f, z);
    clicks(svg, f, depth, onPick);
    return;
  }
  const inner = f.height - f.pad.t - f.pad.b;
  const topA = Math.max(...rows.map((r) => r.area)) || 1;
  const topH = Math.max(...rows.map((r) => r.height)) || 1;
  const yA = (v) => f.pad.t + inner * (1 - v / topA);
  const yH = (v) => f.pad.t + inner * (1 - v / topH);
  line(svg, rows.map((r) => [f.x(r.z), yA(r.area)]), "#4ea1ff");
  line(svg, rows.map((r) => [f.x(r.z), yH(r.height)]), "#ffb74e");
  for (const r of rows) {
    if (r.key || r.accepted) el("rect", { x: f.x(r.z) - 2.5, y: yA(r.area) - 2.5, width: 5, height: 5, fill: r.accepted ? "#5bd68b" : "#4ea1ff" }, svg);
    if (r.outlier) {
      const c = el("circle", { cx: f.x(r.z), cy: yA(r.area), r: 4.5, fill: "#ff6b6b", class: "outlier" }, svg);
      c.dataset.z = r.z;
      el("title", {}, c).textContent = `slice ${r.z}: area ${r.area}, box height ${r.height} (outlier)`;
    }
  }
  el("text", { x: f.pad.l, y: f.height - 3, fill: "#8b919c", "font-size": 10 }, svg).textContent = "0";
  el("text", { x: f.width - f.pad.r - 18, y: f.height - 3, fill: "#8b919c", "font-size": 10 }, svg).textContent = String(depth - 1);
  cursor(svg, f, z);
  clicks(svg, f, depth, onPick);
}

// rows: [{z, dice, iou}]
export function plotScores(svg, rows, depth, onPick) {
  const f = frame(svg, depth);
  const inner = f.height - f.pad.t - f.pad.b;
  const y = (v) => f.pad.t + inner * (1 - v);
  el("line", { x1: f.pad.l, x2: f.width - f.pad.r, y1: y(1), y2: y(1), stroke: "#ffffff22" }, svg);
  line(svg, rows.map((r) => [f.x(r.z), y(r.dice)]), "#5bd68b");
  line(svg, rows.map((r) => [f.x(r.z), y(r.iou)]), "#4ea1ff");
  clicks(svg, f, depth, onPick);
}
