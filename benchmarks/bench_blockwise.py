"""Blockwise prediction (or classical segmentation) on Dask: voxels/s and peak memory per worker for 1 and 2 workers
beside the single-process path, and a kill -9 + resume run whose output equals the uninterrupted one.

    python benchmarks/bench_blockwise.py [--shape 640 1024 1024] [--worker-memory 768MiB] [--model unet-tiny]
        [--block 64 256 256] [--chunks 64 128 128] [--halo 16] [--task predict|segment] [--json out.json]

``--task segment`` runs ``fmscope segment --method otsu --smooth 1`` instead of a model (the single-process row then
segments the whole volume in memory): its workers import no torch, so a 2 GiB volume against 512 MiB workers fits.

A float32 Zarr volume (bright balls in noise, written chunk by chunk, never whole in memory) and a segmentation model
with random weights (the speed, not the answer, is measured) saved as a task model folder. Each configuration runs in
a fresh process (its peak RSS from ``ru_maxrss``; worker peaks from each worker's ``ru_maxrss`` via ``client.run``):

1. ``single process``: ``fmscope predict`` without block flags (today's streaming zarr -> zarr path);
2. ``blockwise, in process``: the block runner without a cluster;
3. ``blockwise, 1 worker`` and ``2 workers``: a LocalCluster of single-threaded worker processes with
   ``--worker-memory`` each, the same plan;
4. ``kill -9 + resume`` (2 workers): the client process killed with SIGKILL once a third of the blocks are flagged,
   then the same command again; its output compared with run 3's, voxel for voxel.

The volume is meant to be at least 4x the memory of one worker (the default: 2.5 GiB against 768 MiB). No timing is
asserted; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OPTIONS = ("--block-shape", "--chunks", "--halo")
SEGMENT = "segment"  # --task segment: no model, the classical segmenter below


def _classical():  # type: ignore[no-untyped-def]
    from fmscope.segment import ClassicalConfig

    return ClassicalConfig("otsu", smooth_sigma=1.0)


def make_volume(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    import dask.array as da

    def balls(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        (z0, _), (y0, _), (x0, _) = block_info[None]["array-location"]  # type: ignore[index]
        zz, yy, xx = np.ogrid[z0 : z0 + block.shape[0], y0 : y0 + block.shape[1], x0 : x0 + block.shape[2]]
        inside = ((zz % 64 - 32) ** 2 + (yy % 64 - 32) ** 2 + (xx % 64 - 32) ** 2) < 20**2
        return (block + inside).astype(np.float32)

    noise = da.random.default_rng(0).normal(0.2, 0.05, shape, chunks=chunks).astype(np.float32)
    import dask

    with dask.config.set(scheduler="threads", num_workers=1):
        noise.map_blocks(balls, dtype=np.float32).to_zarr(str(path), overwrite=True)


def make_model(path: Path, name: str) -> Path:
    import torch

    from fmscope.models import create_model
    from fmscope.tasks.model import TaskModel, TaskSpec, save_task_model

    torch.manual_seed(0)
    return save_task_model(TaskModel(create_model(name), TaskSpec("segment", ("background", "ball"))).eval(), path)


def one(kind: str, model: str, volume: str, out: str, flags: list[str]) -> dict:
    """One configuration in this (fresh) process; ``model`` "segment" runs the classical segmenter instead."""
    from fmscope.inference.blockwise_output import BlockwiseConfig

    t0 = time.perf_counter()
    workers: list[int] = []
    if kind == "single" and model == SEGMENT:
        from fmscope.io import ImageMetadata, read_image, write_image
        from fmscope.segment import segment_classical

        mask = segment_classical(read_image(volume).numpy(), _classical()).mask.astype(np.uint8)
        write_image(out, mask, ImageMetadata.for_array(mask))
    elif kind == "single":
        from fmscope.tasks.predict import predict_file

        predict_file(model, volume, out)
    else:
        values = {f: [int(v) for v in flags[flags.index(f) + 1].split(",")] for f in OPTIONS}
        n = {"inproc": 0, "w1": 1, "w2": 2}[kind]
        config = BlockwiseConfig(tuple(values["--block-shape"]), tuple(values["--halo"]), tuple(values["--chunks"]),
                                 workers=n, worker_memory=flags[flags.index("--worker-memory") + 1])  # fmt: skip
        if n:
            import distributed.worker

            real = distributed.Client.close

            def close(self, *a, **k):  # read the workers' peak RSS before the cluster goes
                workers.extend(self.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values())
                return real(self, *a, **k)

            distributed.Client.close = close  # type: ignore[method-assign]
        if model == SEGMENT:
            from fmscope.inference.segment_blockwise import segment_blockwise

            segment_blockwise(volume, out, _classical(), config)
        else:
            from fmscope.tasks.predict_blockwise import predict_blockwise

            predict_blockwise(model, volume, out, config)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mib": [w / 1024 for w in workers]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[640, 1024, 1024])
    p.add_argument("--chunks", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--block", type=int, nargs=3, default=[64, 256, 256])
    p.add_argument("--halo", type=int, nargs=3, default=[16, 16, 16])
    p.add_argument("--worker-memory", default="768MiB")
    p.add_argument("--model", default="unet-tiny")
    p.add_argument(
        "--task",
        choices=("predict", "segment"),
        default="predict",
        help="predict: the model; segment: otsu after a Gaussian of sigma 1 (no torch in the workers)",
    )
    p.add_argument("--kinds", nargs="+", default=["single", "inproc", "w1", "w2", "kill"])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", nargs=4, default=None, help=argparse.SUPPRESS)
    p.add_argument("--flags", default="[]", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(*args.one, json.loads(args.flags))))
        return
    flags = ["--block-shape", ",".join(map(str, args.block)), "--chunks", ",".join(map(str, args.chunks)),
             "--halo", ",".join(map(str, args.halo)), "--worker-memory", args.worker_memory]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-blockwise-") as tmp:
        root = Path(tmp)
        volume = root / "volume.zarr"
        model = make_model(root / "model", args.model) if args.task == "predict" else Path(SEGMENT)
        make_volume(volume, tuple(args.shape), tuple(args.chunks))
        voxels = int(np.prod(args.shape))
        what = f"model {args.model}" if args.task == "predict" else "otsu after a Gaussian (sigma 1)"
        print(f"volume {tuple(args.shape)} float32 = {voxels * 4 / 2**30:.2f} GiB, {what}, blocks "
              f"{tuple(args.block)} + halo {tuple(args.halo)}, chunks {tuple(args.chunks)}, worker memory "
              f"{args.worker_memory}", flush=True)  # fmt: skip
        rows = {}
        for kind in args.kinds:
            if kind == "kill":
                if "w2" not in rows:
                    print("kill: skipped, it is compared with the uninterrupted 2-worker run (add w2 before kill)")
                elif (row := kill_and_resume(root, model, volume, flags)) is not None:
                    rows[kind] = row
                continue
            r = run_one([sys.executable, __file__, "--one", kind, str(model), str(volume), str(root / f"{kind}.zarr"),
                         "--flags", json.dumps(flags)], kind)  # fmt: skip
            if r is None:
                continue
            rows[kind] = r
            print(f"{kind}: {r['seconds']:.1f} s, {voxels / r['seconds'] / 1e6:.2f} Mvox/s, peak {r['peak_mib']:.0f} "
                  f"MiB, workers {[round(w) for w in r['worker_peak_mib']]}", flush=True)  # fmt: skip
        table(rows, voxels)
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


def run_one(cmd: list[str], kind: str) -> dict | None:
    """The result row of one configuration run as a subprocess (None, with its stderr printed, when it failed)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"{kind}: failed\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def kill_and_resume(root: Path, model: Path, volume: Path, flags: list[str]) -> dict | None:
    import zarr

    from fmscope.inference.blockwise import done_path

    out = root / "killed.zarr"
    cmd = [sys.executable, __file__, "--one", "w2", str(model), str(volume), str(out), "--flags", json.dumps(flags)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, done, total = time.perf_counter(), 0, 0
    while proc.poll() is None:
        try:
            flags_array = zarr.open_array(str(done_path(out)), mode="r")
            total, done = flags_array.shape[0], int(np.count_nonzero(flags_array[:]))
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if total and done >= total // 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    killed_after = time.perf_counter() - t0
    row = run_one(cmd, "kill (the resumed run)")
    if row is None:
        return None
    import dask.array as da

    same = bool(da.all(da.from_zarr(str(out)) == da.from_zarr(str(root / "w2.zarr"))).compute())
    row |= {"killed_after_s": killed_after, "done_at_kill": done, "blocks": total, "identical_to_w2": same,
            "returncode_at_kill": proc.returncode}  # fmt: skip
    print(f"kill -9 after {killed_after:.1f} s with {done}/{total} blocks flagged; resumed in {row['seconds']:.1f} s; "
          f"output identical to the uninterrupted 2-worker run: {same}", flush=True)  # fmt: skip
    return row


def table(rows: dict, voxels: int) -> None:
    names = {"single": "single process (no blocks)", "inproc": "blockwise, in process",
             "w1": "blockwise, 1 worker", "w2": "blockwise, 2 workers",
             "kill": "2 workers, resumed after kill -9"}  # fmt: skip
    base = rows.get("w1", {}).get("seconds")
    print("\n| run | seconds | Mvox/s | vs 1 worker | peak RSS, client (MiB) | peak RSS per worker (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        speed = voxels / r["seconds"] / 1e6
        ratio = f"{base / r['seconds']:.2f}x" if base and kind != "kill" else ""
        workers = ", ".join(f"{w:.0f}" for w in r["worker_peak_mib"]) or "-"
        print(f"| {names[kind]} | {r['seconds']:.1f} | {speed:.2f} | {ratio} | {r['peak_mib']:.0f} | {workers} |")


if __name__ == "__main__":
    main()
