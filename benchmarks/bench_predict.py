"""Sliding-window prediction over a large volume: throughput and peak memory, fmscope against MONAI.

    python benchmarks/bench_predict.py [--size 256 512 512] [--window 64 64 64] [--overlap 0.25] [--batch 2]
                                       [--zarr-limit-mib N] [--threads N] [--repeat N] [--json out.json]

A small MONAI UNet (3D, 1 -> 2 channels, channels (8, 16, 32), random weights) is applied with Gaussian blending to a
random float32 volume in [0, 1] (quantised to 16-bit levels), written once as a zarr array into a temporary folder.
Each run happens in a fresh process (peak RSS from the child's ``ru_maxrss``):

1. ``MONAI in memory``: ``monai.inferers.sliding_window_inference`` on the whole volume as a tensor.
2. ``fmscope in memory``: ``sliding_window_predict`` on the whole volume as a numpy array, numpy output.
3. ``fmscope zarr -> zarr``: the input read window by window from the zarr array on disk, the output written slab by
   slab to a zarr array on disk. Its peak RSS should stay far below input + output size (reported next to it).

The ``base RSS`` column is the child's peak RSS after imports and model creation, before any data is touched: the
difference to ``peak RSS`` is what the prediction itself needs. ``--zarr-limit-mib N`` additionally caps run 3 with
``RLIMIT_AS`` at (virtual size after setup + N MiB); RLIMIT_AS counts virtual memory (torch, its thread pools and
malloc arenas reserve much more than they touch), so a too small N fails for reasons unrelated to the data: the
reported peak RSS against input + output size is the primary evidence. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

KINDS = {"monai": "MONAI in memory", "numpy": "fmscope in memory", "zarr": "fmscope zarr -> zarr"}
OUT_CHANNELS = 2


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize not found in /proc/self/status")


def write_input(path: Path, size: tuple[int, ...], window: tuple[int, ...], seed: int = 0) -> None:
    """A random volume in [0, 1] at 16-bit levels, written slab by slab (never whole in memory)."""
    import zarr

    arr = zarr.open_array(store=path, mode="w", shape=size, chunks=window, dtype="float32")
    rng = np.random.default_rng(seed)
    for z0 in range(0, size[0], window[0]):
        z1 = min(size[0], z0 + window[0])
        arr[z0:z1] = rng.integers(0, 65536, size=(z1 - z0, *size[1:])).astype(np.float32) / 65535.0


def run_one(kind: str, data: Path, window: tuple[int, ...], overlap: float, batch: int, limit_mib: int | None) -> dict:
    """One benchmark run in this (child) process; returns its measurements."""
    import zarr
    from monai.networks.nets import UNet

    from fmscope.inference.predict import WindowConfig, sliding_window_predict

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=OUT_CHANNELS, channels=(8, 16, 32), strides=(2, 2))
    net = net.to(device).eval()
    with torch.inference_mode():  # warm-up, so lazily loaded kernels count in the base RSS
        net(torch.zeros(1, 1, *window, device=device))
    source = zarr.open_array(store=data / "input.zarr", mode="r")
    base_rss = _rss_mib()
    if kind == "zarr" and limit_mib is not None:
        cap = _vm_size_bytes() + limit_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    config = WindowConfig(window, overlap=overlap, blend="gaussian", batch_size=batch)

    if kind == "monai":
        from monai.inferers import sliding_window_inference

        volume = torch.from_numpy(np.asarray(source[:]))[None, None]
        t0 = time.perf_counter()
        with torch.inference_mode():
            pred = sliding_window_inference(
                volume, window, batch, net, overlap=overlap, mode="gaussian", sw_device=device, device="cpu"
            )
        seconds = time.perf_counter() - t0
        mean = float(pred.mean())  # type: ignore[union-attr]
    elif kind == "numpy":
        volume_np = np.asarray(source[:])
        t0 = time.perf_counter()
        pred_np = sliding_window_predict(volume_np, net, config, out_channels=OUT_CHANNELS, device=device)
        seconds = time.perf_counter() - t0
        mean = float(pred_np.mean())
    else:
        shape = (OUT_CHANNELS, *source.shape)
        out = zarr.open_array(store=data / "output.zarr", mode="w", shape=shape, chunks=(1, *window), dtype="float32")
        t0 = time.perf_counter()
        sliding_window_predict(source, net, config, out_channels=OUT_CHANNELS, out=out, device=device)
        seconds = time.perf_counter() - t0
        mean = float(np.mean([np.asarray(out[:, z]).mean() for z in range(shape[1])]))  # row by row: bounded
    voxels = math.prod(source.shape)
    return {
        "seconds": seconds,
        "voxels_per_s": voxels / seconds,
        "base_rss_mib": base_rss,
        "peak_rss_mib": _rss_mib(),
        "output_mean": mean,
        "device": device.type,
    }


def _median(runs: list[dict]) -> dict:
    """The run of median time among those that succeeded, with every run's seconds (the first error otherwise)."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["seconds"])
    if not ok:
        return runs[0]
    return {**ok[(len(ok) - 1) // 2], "all_seconds": [round(r["seconds"], 2) for r in ok]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=(256, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--window", type=int, nargs=3, default=(64, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--zarr-limit-mib", type=int, default=None, help="cap run 3 with RLIMIT_AS at setup + N MiB")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in each run (0: torch's default)")
    p.add_argument("--repeat", type=int, default=1, help="fresh processes per run, interleaved; the median is shown")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", choices=tuple(KINDS), default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    size, window = tuple(args.size), tuple(args.window)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_one(args.child, args.data, window, args.overlap, args.batch, args.zarr_limit_mib)))
        return

    input_mib = math.prod(size) * 4 / 2**20
    output_mib = input_mib * OUT_CHANNELS
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        write_input(Path(tmp) / "input.zarr", size, window)
        for _ in range(args.repeat):  # interleaved, so that a slow spell of the machine hits every kind alike
            for kind in KINDS:
                cmd = [sys.executable, __file__, "--child", kind, "--data", tmp, "--size", *map(str, size)]
                cmd += ["--window", *map(str, window), "--overlap", str(args.overlap), "--batch", str(args.batch)]
                cmd += ["--threads", str(args.threads)]
                if args.zarr_limit_mib is not None:
                    cmd += ["--zarr-limit-mib", str(args.zarr_limit_mib)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                    runs[kind].append({"error": f"exit {proc.returncode}: {tail[0]}"})
                else:
                    runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {kind: _median(r) for kind, r in runs.items()}

    device = next((r["device"] for r in results.values() if "device" in r), "?")
    print(
        f"volume {size} float32 = {input_mib:.0f} MiB in, {output_mib:.0f} MiB out ({OUT_CHANNELS} channels); "
        f"input + output = {input_mib + output_mib:.0f} MiB; window {window}, overlap {args.overlap}, "
        f"batch {args.batch}, device {device}\n"
    )
    print("| run | s (median) | all runs (s) | voxels / s | base RSS (MiB) | peak RSS (MiB) | peak - base (MiB) | "
          "output mean |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for kind, name in KINDS.items():
        r = results[kind]
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | | | |")
            continue
        print(
            f"| {name} | {r['seconds']:.2f} | {', '.join(map(str, r['all_seconds']))} | {r['voxels_per_s']:.3g} | "
            f"{r['base_rss_mib']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['base_rss_mib']:.0f} | {r['output_mean']:.5f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "size": size,
                    "window": window,
                    "overlap": args.overlap,
                    "batch": args.batch,
                    "runs": runs,
                    "input_mib": input_mib,
                    "output_mib": output_mib,
                    "results": results,
                },
                indent=2,
            )  # fmt: skip
        )


if __name__ == "__main__":
    main()
