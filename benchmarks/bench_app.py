"""How fast the web app answers, through its HTTP API as the page calls it, beside a baseline measured in the same run.

    python benchmarks/bench_app.py [--data ../shared/data] [--big-slices 1024] [--clicks 30] [--json out.json]

Three measurements (each on a server started with ``fmscope app`` in a separate process, on this machine):

* **click -> mask**: a 1024 x 1024 uint16 SEM slice (the TiO2 image of the shared data, resized and scaled to 16 bits)
  whose features are computed; the simulated annotator's clicks (interior of the largest error) on the largest
  particles; each click is ``POST /edit`` (add_point) plus ``GET /labels`` (what the page draws). Baseline: the rf
  backend of the previous release (50-tree random forest on 5000 pixels per class, the whole slice classified),
  called in process on the same clicks; the new backend in process beside it.
* **changing slice**: ``GET /slice/{z}`` of a 64 x 1024 x 1024 uint16 OME-Zarr stack read lazily, slices in random
  order. Baseline: the same slice read, windowed to 8 bits and PNG-encoded on the server (what an image-based viewer
  sends).
* **first slice on screen** of a 2 GiB OME-Zarr stack (``--big-slices`` x 1024 x 1024 uint16): ``POST /images``
  (metadata and a histogram of 5 slices) plus ``GET /slice`` of the middle slice. Baseline: loading the volume whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate import next_click
from fmscope.io import ImageMetadata, read_image, write_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A keep-alive-free HTTP client of the app (urllib, like a fresh fetch per call)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie = ""

    def call(self, method: str, path: str, data: Any = None) -> tuple[bytes, dict[str, str]]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Content-Type", "application/json")
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        with urllib.request.urlopen(req, timeout=600) as r:
            cookie = r.headers.get("set-cookie")
            if cookie:
                self.cookie = cookie.split(";")[0]
            return r.read(), dict(r.headers)

    def json(self, method: str, path: str, data: Any = None) -> Any:
        return json.loads(self.call(method, path, data)[0])

    def wait(self, job: dict[str, Any]) -> dict[str, Any]:
        while job["state"] in ("queued", "running"):
            time.sleep(0.05)
            job = self.json("GET", f"/api/jobs/{job['id']}")
        if job["state"] != "done":
            raise RuntimeError(f"job failed: {job}")
        return job


def _sem_slice(data: Path) -> tuple[np.ndarray, np.ndarray]:
    root = data / "tio2_sem_particles_bam"
    image = read_image(root / "images_sem" / "1908248.tif").numpy()[:704]
    mask = read_image(root / "masks_manual_4connected" / "1908248_m.tif").numpy()[:704]
    big = resize(image.astype(np.float32), (1024, 1024), order=1, preserve_range=True)
    labels = ndi.label(resize(mask > 0, (1024, 1024), order=0))[0]
    return (big * 257).astype(np.uint16), labels


def _click_plan(labels: np.ndarray, objects: int, per_object: int, backend: RandomForestPrompter, emb: Any) -> list:
    """The simulated annotator's clicks on the largest objects (made with ``backend``): [(object, [(y, x, +/-)])]."""
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    plan = []
    for k in ids[np.argsort(-sizes)][:objects]:
        truth = labels == k
        prediction = np.zeros_like(truth)
        pos: list[tuple[float, float]] = []
        neg: list[tuple[float, float]] = []
        clicks = []
        for _ in range(per_object):
            found = next_click(prediction, truth)
            if found is None:
                break
            (y, x), positive = found
            (pos if positive else neg).append((y, x))
            clicks.append((int(y), int(x), positive))
            prediction = backend.predict(emb, ObjectPrompt(1, tuple(pos), tuple(neg))).mask
        plan.append((int(k), clicks))
    return plan


def _in_process(backend: RandomForestPrompter, emb: Any, plan: list) -> list[float]:
    times = []
    for _, clicks in plan:
        pos: list[tuple[float, float]] = []
        neg: list[tuple[float, float]] = []
        for y, x, positive in clicks:
            (pos if positive else neg).append((float(y), float(x)))
            t0 = time.perf_counter()
            backend.predict(emb, ObjectPrompt(1, tuple(pos), tuple(neg)))
            times.append(time.perf_counter() - t0)
    return times


def _stats(times: list[float]) -> str:
    ms = 1000 * np.asarray(times)
    return f"{np.median(ms):.0f} | {np.mean(ms):.0f} | {np.percentile(ms, 90):.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--big-slices", type=int, default=1024, help="slices of 1024 x 1024 uint16 (1024 = 2 GiB)")
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--clicks", type=int, default=3, help="clicks per object")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fmscope-bench-app-"))
    rows: dict[str, Any] = {}
    server = None
    try:
        root = work / "data"
        root.mkdir()
        sem, labels = _sem_slice(args.data)
        write_image(root / "sem_1024.tif", sem, ImageMetadata.for_array(sem))
        rng = np.random.default_rng(0)
        stack = np.stack([np.roll(sem, 7 * z, axis=1) for z in range(64)])
        write_image(root / "stack.ome.zarr", stack, ImageMetadata.for_array(stack))
        t0 = time.perf_counter()
        import dask.array as da

        big = da.from_array(stack, chunks=(1, 1024, 1024))
        big = da.concatenate([big] * (args.big_slices // 64) + [big[: args.big_slices % 64]], axis=0)
        write_image(root / "big.ome.zarr", big, ImageMetadata.for_array(big), chunks=(1, 1024, 1024), pyramid_levels=1)
        size = sum(f.stat().st_size for f in (root / "big.ome.zarr").rglob("*") if f.is_file())
        print(f"wrote a {big.nbytes / 2**30:.2f} GiB stack ({size / 2**30:.2f} GiB on disk) in "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip

        port = _port()
        server = subprocess.Popen([sys.executable, "-m", "fmscope.cli.main", "app", "--data-root", str(root),
                                   "--sessions", str(work / "sessions"), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        client = Client(f"http://127.0.0.1:{port}")
        for _ in range(300):
            try:
                client.json("GET", "/api/info")
                break
            except OSError:
                time.sleep(0.1)

        # ---- click -> mask
        new = RandomForestPrompter()
        emb = new.embed(sem)
        plan = _click_plan(labels, args.objects, args.clicks, new, emb)
        old = RandomForestPrompter(replace(new.config, forest="random", n_estimators=50, max_samples_per_class=5000,
                                           max_features="sqrt"))  # fmt: skip
        old.search_margin = 10**6  # the whole slice classified at every click, as before
        rows["click_old_in_process"] = _in_process(old, emb, plan)
        rows["click_new_in_process"] = _in_process(new, emb, plan)
        created = client.wait(client.json("POST", "/api/sessions", {"image": {"path": "sem_1024.tif"}}))
        sid = created["result"]["session"]
        client.wait(client.json("POST", f"/api/sessions/{sid}/embed", {}))
        times = []
        for _, clicks in plan:
            oid = client.json("POST", f"/api/sessions/{sid}/edit", {"op": "new_object"})["result"]
            for y, x, positive in clicks:
                t0 = time.perf_counter()
                client.json("POST", f"/api/sessions/{sid}/edit",
                            {"op": "add_point", "id": oid, "z": 0, "y": y, "x": x, "positive": positive})  # fmt: skip
                client.call("GET", f"/api/sessions/{sid}/labels/0")
                times.append(time.perf_counter() - t0)
        rows["click_http"] = times

        # ---- changing slice
        info = client.json("POST", "/api/images", {"path": "stack.ome.zarr"})
        order = rng.permutation(64)[:30]
        times = []
        for z in order:
            t0 = time.perf_counter()
            client.call("GET", f"/api/images/{info['id']}/slice/{int(z)}")
            times.append(time.perf_counter() - t0)
        rows["slice_raw_http"] = times
        import imageio.v3 as iio

        lazy = read_image(root / "stack.ome.zarr")
        lo, hi = info["histogram"]["window"]
        times = []
        for z in order:
            t0 = time.perf_counter()
            plane = np.asarray(lazy.data[int(z)], np.float32)
            png = iio.imwrite("<bytes>", np.clip((plane - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8),
                              extension=".png")  # fmt: skip
            times.append(time.perf_counter() - t0)
        rows["slice_png_in_process"] = times
        rows["png_bytes"] = len(png)

        # ---- first slice of the 2 GiB stack
        t0 = time.perf_counter()
        big_info = client.json("POST", "/api/images", {"path": "big.ome.zarr"})
        client.call("GET", f"/api/images/{big_info['id']}/slice/{args.big_slices // 2}")
        rows["first_slice_http"] = [time.perf_counter() - t0]
        t0 = time.perf_counter()
        whole = read_image(root / "big.ome.zarr").numpy()
        rows["whole_volume_load"] = [time.perf_counter() - t0]
        rows["big_gib"] = whole.nbytes / 2**30
        del whole
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print("\n| measurement | how | median ms | mean ms | p90 ms | target |\n|---|---|---|---|---|---|")
    print(f"| click -> mask, 1024^2 uint16 | app over HTTP (edit + labels) | {_stats(rows['click_http'])} | <= 150 |")
    print(f"| | rf backend in process | {_stats(rows['click_new_in_process'])} | |")
    print(f"| | baseline: previous rf (50-tree forest, whole slice) in process | "
          f"{_stats(rows['click_old_in_process'])} | |")  # fmt: skip
    print(f"| changing slice, 1024^2 uint16 OME-Zarr | app over HTTP (raw bytes) | {_stats(rows['slice_raw_http'])} "
          "| <= 50 |")  # fmt: skip
    print(f"| | baseline: read + window + PNG on the server | {_stats(rows['slice_png_in_process'])} | |")
    print(f"| first slice, {rows['big_gib']:.1f} GiB OME-Zarr | app over HTTP (open + slice) | "
          f"{_stats(rows['first_slice_http'])} | <= 2000 |")  # fmt: skip
    print(f"| | baseline: load the volume whole | {_stats(rows['whole_volume_load'])} | |")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
