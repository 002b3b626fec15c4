"""The pretraining part of ``fmscope quickstart``: captioned light-sheet phantoms -> a short image+text run."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fmscope.config import resolve_config
from fmscope.data import lightsheet_phantom
from fmscope.engine.logs import read_metrics
from fmscope.io import ImageMetadata, write_image
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.train import pretrain
from fmscope.utils.atomic import atomic_output
from fmscope.utils.progress import ProgressCallback

# (structures, caption): one stain/structure mix per phantom volume, described the way the LSM captions are
PHANTOM_STAINS = (
    (("nuclei",), "Nuclear stain in cleared mouse cortex: dense, evenly spaced round nuclei of similar size."),
    (("vessels",), "Vascular stain in cleared mouse brain: branching tubular vessels of varying calibre."),
    (("plaques",), "Amyloid stain in an Alzheimer model: sparse, very bright punctate plaques with a faint halo."),
    (("nuclei", "vessels"), "Nuclei and vessels co-stained in cleared tissue: round nuclei beside tubular vessels."),
)

SHAPE = (40, 64, 64)  # of each captioned phantom volume
QUICK_OVERRIDES = (  # the model is pretrain_on_phantoms(model=...)
    "data.patch_size=[32, 32, 32]",
    "data.patches_per_volume=2",
    "data.min_foreground=0.0",
    "method.queue_size=16",
    "train.batch_size=2",
    "train.checkpoint_every=1000",
    "train.text_warmup_steps=10",
    "optim.warmup_steps=5",
    "masking.warmup_steps=5",
)


@dataclass(frozen=True)
class PretrainSummary:
    steps: int
    seconds: float
    first: dict[str, float]
    last: dict[str, float]
    curves: Path
    model_dir: Path | None
    model: str = "unet-cpu"


def pretrain_on_phantoms(
    folder: Path,
    *,
    seed: int = 0,
    steps: int = 30,
    model: str = "unet-cpu",
    shape: tuple[int, int, int] = SHAPE,
    progress: ProgressCallback | bool | None = None,
) -> PretrainSummary:
    """Write four captioned phantom volumes of ``shape`` to ``folder/data`` and pretrain ``model`` on them into
    ``folder/run`` (image+text, all four loss terms); the run keeps its exported model folder, metrics and curves,
    not its training checkpoint."""
    data = folder / "data"
    data.mkdir(parents=True)
    captions = {}
    for i, (structures, caption) in enumerate(PHANTOM_STAINS):
        ph = lightsheet_phantom(shape, structures=structures, seed=seed + i)
        name = f"stain{i}_{'_'.join(structures)}.tif"
        write_image(data / name, ph.image, ImageMetadata.for_array(ph.image, spacing=ph.spacing, unit=ph.unit))
        captions[name] = caption
    with atomic_output(data / "captions.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(captions, indent=2) + "\n")
    config = resolve_config(
        PretrainConfig,
        None,
        list(QUICK_OVERRIDES),
        {"data.path": str(data), "train.steps": steps, "train.seed": seed, "method.model": model},
    )
    t0 = time.perf_counter()
    result = pretrain(config, folder / "run", progress=progress)
    # The resume checkpoint (157 MB, over half the quickstart folder) is of no use once the model is exported.
    shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)
    rows = read_metrics(folder / "run" / "metrics.csv")
    return PretrainSummary(
        steps=result.steps_done,
        seconds=time.perf_counter() - t0,
        first=rows[0],
        last=rows[-1],
        curves=folder / "run" / "loss_curves.png",
        model_dir=result.model_dir,
        model=model,
    )


def pretrain_markdown(summary: PretrainSummary, relative_curves: str) -> str:
    keys = ("distill", "recon", "align", "clip", "clip_chance", "clip_scale")
    lines = [
        f"Image+text pretraining of `{summary.model}` on four captioned phantom volumes: {summary.steps} steps in "
        f"{summary.seconds:.0f} s (32^3 patches, batch 2; the text tower's top layers unfreeze after step 10).",
        "",
        "| term | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
        "| first step | " + " | ".join(f"{summary.first[k]:.4f}" for k in keys) + " |",
        "| last step | " + " | ".join(f"{summary.last[k]:.4f}" for k in keys) + " |",
        "",
        "`clip_chance` is the CLIP loss of an uninformed model with the same candidates (it rises while the queue "
        "fills); the gap below it is what the image-text alignment has learned.",
        "",
        f"![loss curves]({relative_curves})",
        "",
        "The run keeps its exported model folder (`pretrain/run/model`: the backbone and the whole pretrainer), not "
        "its training checkpoint.",
    ]
    return "\n".join(lines)
