// Talking to the fmscope server: JSON calls, raw pixel arrays, and jobs polled until they finish.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

async function check(response) {
  if (response.ok) return response;
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`, body);
}

export async function getJSON(url) {
  const r = await check(await fetch(url, { credentials: "same-origin" }));
  return r.json();
}

export async function postJSON(url, data) {
  const r = await check(await fetch(url, {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data || {}),
  }));
  return r.json();
}

const ARRAYS = {
  uint8: Uint8Array, uint16: Uint16Array, int16: Int16Array, uint32: Uint32Array, float32: Float32Array,
};

// A raw slice: {data: TypedArray, height, width, dtype, step, region: [y0, x0, y1, x1]}
export async function getRaw(url) {
  const r = await check(await fetch(url, { credentials: "same-origin" }));
  const buffer = await r.arrayBuffer();
  const [height, width] = r.headers.get("X-Shape").split(",").map(Number);
  const dtype = r.headers.get("X-Dtype");
  const Kind = ARRAYS[dtype];
  if (!Kind) throw new ApiError(0, `unsupported pixel type ${dtype}`);
  const region = (r.headers.get("X-Region") || `0,0,${height},${width}`).split(",").map(Number);
  return {
    data: new Kind(buffer), height, width, dtype, step: Number(r.headers.get("X-Step") || 1), region,
    revision: Number(r.headers.get("X-Revision") || 0),
  };
}

export async function upload(file, onProgress) {
  // the browser streams the file from disk; the server writes it to disk and stops at the size limit
  const r = await check(await fetch(`/api/uploads?name=${encodeURIComponent(file.name)}`, {
    method: "POST", credentials: "same-origin", body: file,
    headers: { "Content-Type": "application/octet-stream" },
  }));
  if (onProgress) onProgress(1);
  return r.json();
}

// Poll a job until it ends; onStatus(status) after each poll. Resolves with the final status.
export async function follow(job, onStatus, interval = 200) {
  let status = job;
  while (status.state === "queued" || status.state === "running") {
    if (onStatus) onStatus(status);
    await new Promise((resolve) => setTimeout(resolve, interval));
    status = await getJSON(`/api/jobs/${job.id}`);
  }
  if (onStatus) onStatus(status);
  return status;
}
