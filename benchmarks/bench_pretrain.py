"""Pretraining throughput and peak memory: the fmscope method step against a plain MONAI forward/backward.

    python benchmarks/bench_pretrain.py [--config unet-cpu] [--batch 2] [--steps 10] [--json out.json]
                                        [--set key=value ...]

``--set`` overrides keys of the config as ``fmscope pretrain`` does (e.g. ``method.text_source=PATH`` for a local text
model folder; the step's cost depends on the text model's architecture, not on its weights).

Both run on the same backbone, input size and batch, each in a fresh process (peak RSS from the child's rusage; on CUDA
also the peak allocated GPU memory):
* ``fmscope method``: block masking, student + EMA teacher, distillation head at masked voxels, reconstruction decoder,
  image/text projections and CLIP queue (text terms as in the config, captions synthetic), AdamW, EMA update.
* ``plain MONAI``: the backbone's network alone, MSE to a random target, AdamW.
The ratio is the method's overhead. Median seconds per step over ``--steps`` after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fmscope.cli.pretrain_commands import shipped_config_path
from fmscope.config import resolve_config
from fmscope.data import make_block_mask
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.ema import cosine_momentum
from fmscope.pretrain.method import MultimodalPretrainer

CAPTIONS = ["tubular vessels in cleared mouse brain", "punctate amyloid plaques", "dense nuclei, DAPI-like stain"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_one(kind: str, config_name: str, batch: int, steps: int, overrides: list[str]) -> dict[str, float]:
    cfg = resolve_config(PretrainConfig, shipped_config_path(config_name), overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    method = MultimodalPretrainer(cfg.method).to(device)
    size = cfg.data.patch_size
    x = torch.rand(batch, 1, *size, device=device)
    bf16 = device.type == "cuda"
    if kind == "method":
        if method.text_encoder is not None:
            method.text_encoder.set_stage("top")  # type: ignore[operator]
        params = method.parameters_to_optimise()
        g = torch.Generator().manual_seed(0)
        masks = torch.stack([make_block_mask(size, cfg.masking.block_size, cfg.masking.ratio, g) for _ in range(batch)])
        masks = masks.unsqueeze(1).to(device)
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]

        def step(i: int) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                terms = method(x, masks, captions)
            terms.total.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            method.update_teacher(cosine_momentum(i, 1000))
    else:
        net = method.student.net  # the MONAI network itself
        params = list(net.parameters())
        target = torch.rand(batch, method.student.dense_dim, *size, device=device)

        def step(i: int) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.mse_loss(net(x).float(), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    opt = torch.optim.AdamW(params, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        _sync(device)
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "seconds_per_step": median,
        "patches_per_s": batch / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
        "params_m": sum(p.numel() for p in params) / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="unet-cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--child", choices=("method", "plain"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.config, args.batch, args.steps, args.set)))
        return
    results = {}
    for kind in ("plain", "method"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--config",
            args.config,
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            *(f"--set={item}" for item in args.set),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"config {args.config}, batch {args.batch}, device {device}, median of {args.steps} steps\n")
    print("| run | trained params (M) | s / step | patches / s | peak RSS (MiB) | peak GPU (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, kind in (("plain MONAI fwd+bwd+AdamW", "plain"), ("fmscope method step", "method")):
        r = results[kind]
        print(
            f"| {name} | {r['params_m']:.2f} | {r['seconds_per_step']:.3f} | {r['patches_per_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_gpu_mib']:.0f} |"
        )
    overhead = results["method"]["seconds_per_step"] / results["plain"]["seconds_per_step"]
    print(f"\nmethod overhead: {overhead:.2f}x the plain step time")
    if args.json:
        summary = {"config": args.config, "batch": args.batch, "device": device, "overrides": args.set, **results}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
