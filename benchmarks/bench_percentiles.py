"""Benchmark: streamed percentiles (fmscope.intensity.compute_stats over dask chunks) vs load-whole + np.percentile.

Creates a synthetic uint16 Zarr v3 volume (default (Z, Y, X) = (512, 1024, 1024), 1 GiB; written slab by slab so
creation is bounded too), then measures each method in a fresh subprocess so that the peak RSS (``ru_maxrss`` of the
child) is honest:

* ``streamed``: ``compute_stats(da.from_zarr(path))`` with the dask threaded scheduler (chunks are visited a small
  batch at a time, exact uint16 histogram);
* ``numpy``: ``zarr_array[:]`` then ``np.percentile``.

Prints a Markdown table and writes JSON (``benchmarks/results/bench_percentiles.json`` by default, or ``--json``).

    python benchmarks/bench_percentiles.py                      # full size, ~1 GiB of temporary disk
    python benchmarks/bench_percentiles.py --shape 128 256 256  # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (0.5, 1.0, 99.0, 99.5, 99.8)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_percentiles.json"


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def make_volume(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int], seed: int = 0) -> None:
    """Synthetic EM-like uint16 volume: dim background, brighter textured structures, a few saturated voxels."""
    import zarr

    arr = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint16", zarr_format=3)
    rng = np.random.default_rng(seed)
    _, ny, nx = shape
    y = np.arange(ny, dtype=np.float32)[:, None]
    x = np.arange(nx, dtype=np.float32)[None, :]
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(shape[0], z0 + chunks[0])
        z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        structure = np.sin(z / 17.0) * np.sin(y / 23.0) * np.cos(x / 29.0)  # smooth, in [-1, 1]
        inside = structure > 0.3
        slab = np.where(inside, 2500.0 + 1200.0 * structure, 600.0 + 200.0 * structure).astype(np.float32)
        slab += rng.standard_normal(slab.shape, dtype=np.float32) * np.where(inside, 400.0, 80.0)
        hot = rng.random(slab.shape, dtype=np.float32) < 1e-3
        slab[hot] = 65535.0
        arr[z0:z1] = np.clip(slab, 0, 65535).astype(np.uint16)


def _measure(method: str, path: str) -> dict[str, Any]:
    """Run in the child process: one method, its wall time, its values and the child's peak RSS."""
    import dask
    import dask.array as da
    import zarr

    from fmscope.intensity import compute_stats

    rss_before = _peak_rss_mib()
    start = time.perf_counter()
    if method == "streamed":
        with dask.config.set(scheduler="threads"):
            stats = compute_stats(da.from_zarr(path), percentiles=PERCENTILES)
        values = [v for _, v in stats.percentiles]
    elif method == "numpy":
        whole = np.asarray(zarr.open_array(path, mode="r")[:])
        values = [float(v) for v in np.percentile(whole, PERCENTILES)]
    else:
        raise SystemExit(f"unknown method {method!r}")
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_rss_mib": _peak_rss_mib(), "rss_after_imports_mib": rss_before, "values": values}


def _run_child(method: str, path: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one step in a fresh interpreter. Creation runs in a child too: on Linux a child inherits its parent's
    ``ru_maxrss`` high-water mark, so the parent must stay small for the measured children to be honest."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", method, str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child '{method}' failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | wall time s | peak RSS MiB | RSS after imports MiB | values agree |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['rss_after_imports_mib']:.0f} "
            f"| {r['agree']} |"
        )
    return "\n".join(lines)


def run(shape: tuple[int, int, int], chunks: tuple[int, int, int], workdir: Path, json_path: Path) -> dict[str, Any]:
    """Create (or reuse) the volume under ``workdir``, measure both methods, print the table, write JSON."""
    path = workdir / f"bench_{'x'.join(map(str, shape))}_{'x'.join(map(str, chunks))}.zarr"
    t0 = time.perf_counter()
    if not path.exists():
        _run_child("create", path, ("--shape", *map(str, shape), "--chunks", *map(str, chunks)))
    create_s = time.perf_counter() - t0
    results = {m: _run_child(m, path) for m in ("streamed", "numpy")}
    agree = results["streamed"]["values"] == results["numpy"]["values"]
    rows = [{"method": m, **r, "agree": agree} for m, r in results.items()]
    report = {
        "benchmark": "bench_percentiles",
        "shape_zyx": list(shape),
        "chunks_zyx": list(chunks),
        "dtype": "uint16",
        "volume_mib": int(np.prod(shape)) * 2 / 2**20,
        "percentiles": list(PERCENTILES),
        "create_s": create_s,
        "scheduler": "dask threads",
        "python": platform.python_version(),
        "rows": rows,
        "values_agree": agree,
    }
    print(f"volume {shape} uint16 ({report['volume_mib']:.0f} MiB), chunks {chunks}, created in {create_s:.1f} s")
    print(_table(rows))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    print(f"JSON written to {json_path}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 1024, 1024), metavar=("Z", "Y", "X"))
    parser.add_argument("--chunks", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the volume here instead of a temporary folder")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})")
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure and args.measure[0] == "create":
        make_volume(Path(args.measure[1]), tuple(args.shape), tuple(args.chunks))
        print(json.dumps({"created": args.measure[1]}))
        return {}
    if args.measure:
        result = _measure(*args.measure)
        print(json.dumps(result))
        return result
    shape, chunks = tuple(args.shape), tuple(args.chunks)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(shape, chunks, args.workdir, args.json)
    with tempfile.TemporaryDirectory(prefix="fmscope-bench-") as tmp:
        return run(shape, chunks, Path(tmp), args.json)


if __name__ == "__main__":
    main()
