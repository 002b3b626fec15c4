// Pixels to colours: raw slices windowed for display (the data stay raw), labels coloured by id.

// The colour of object `id`: hues spread by the golden angle, so neighbouring ids differ.
export function colour(id) {
  const hue = (id * 137.508) % 360;
  return hslToRgb(hue / 360, 0.75, 0.55);
}

export function cssColour(id) {
  const [r, g, b] = colour(id);
  return `rgb(${r}, ${g}, ${b})`;
}

function hslToRgb(h, s, l) {
  const q = l < 0.5 ? l * (1 + s) : l + s - l * s;
  const p = 2 * l - q;
  const f = (t) => {
    t = (t + 1) % 1;
    if (t < 1 / 6) return p + (q - p) * 6 * t;
    if (t < 1 / 2) return q;
    if (t < 2 / 3) return p + (q - p) * (2 / 3 - t) * 6;
    return p;
  };
  return [Math.round(f(h + 1 / 3) * 255), Math.round(f(h) * 255), Math.round(f(h - 1 / 3) * 255)];
}

// Grey ImageData of a raw slice through the window [lo, hi]; integer types go through a lookup table.
export function windowed(slice, lo, hi, target) {
  const n = slice.width * slice.height;
  const out = target && target.width === slice.width && target.height === slice.height
    ? target : new ImageData(slice.width, slice.height);
  const px = out.data;
  const data = slice.data;
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  if (slice.dtype === "uint8" || slice.dtype === "uint16") {
    const size = slice.dtype === "uint8" ? 256 : 65536;
    const lut = new Uint8ClampedArray(size);
    for (let v = 0; v < size; v++) lut[v] = (v - lo) * scale;
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const g = lut[data[i]];
      px[j] = g; px[j + 1] = g; px[j + 2] = g; px[j + 3] = 255;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const v = data[i];
      const g = Number.isFinite(v) ? (v - lo) * scale : 0;
      const c = g < 0 ? 0 : g > 255 ? 255 : g;
      px[j] = c; px[j + 1] = c; px[j + 2] = c; px[j + 3] = 255;
    }
  }
  return out;
}

// RGBA of a label plane: every object in its colour (`alpha`), the selected one stronger, its edge opaque.
export function coloured(labels, selected, alpha = 0.42, hidden = null) {
  const { width, height, data } = labels;
  const out = new ImageData(width, height);
  const px = out.data;
  const cache = new Map();
  const a = Math.round(alpha * 255);
  for (let i = 0, j = 0; i < data.length; i++, j += 4) {
    const id = data[i];
    if (id === 0 || (hidden && hidden.has(id))) continue;
    let c = cache.get(id);
    if (!c) { c = colour(id); cache.set(id, c); }
    let edge = false;
    if (id === selected) {
      const x = i % width;
      edge = (x > 0 && data[i - 1] !== id) || (x < width - 1 && data[i + 1] !== id)
        || (i >= width && data[i - width] !== id) || (i + width < data.length && data[i + width] !== id);
    }
    px[j] = c[0]; px[j + 1] = c[1]; px[j + 2] = c[2];
    px[j + 3] = edge ? 255 : id === selected ? Math.min(255, a + 50) : a;
  }
  return out;
}

// Histogram of the image (log counts) with the display window drawn over it.
export function drawHistogram(canvas, histogram, lo, hi) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (!histogram) return;
  const counts = histogram.counts;
  const top = Math.log1p(Math.max(...counts));
  ctx.fillStyle = "#6f7a8a";
  for (let k = 0; k < counts.length; k++) {
    const h = top > 0 ? (Math.log1p(counts[k]) / top) * (height - 2) : 0;
    const x = (k / counts.length) * width;
    ctx.fillRect(x, height - h, Math.max(1, width / counts.length), h);
  }
  const span = histogram.max - histogram.min || 1;
  const at = (v) => ((v - histogram.min) / span) * width;
  ctx.strokeStyle = "#4ea1ff";
  ctx.lineWidth = 2;
  for (const v of [lo, hi]) {
    ctx.beginPath();
    ctx.moveTo(at(v), 0);
    ctx.lineTo(at(v), height);
    ctx.stroke();
  }
}
