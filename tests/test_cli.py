"""CLI behaviour: every command works, prints what it promises, and fails with one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import run
from fmscope.cli.main import main
from fmscope.errors import InvalidInputError
from fmscope.io import ImageMetadata, read_image, write_image

COMMANDS = ["info", "convert", "normalize", "segment", "evaluate", "quickstart", "simulate", "models"]


@pytest.fixture
def blobs(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 3D uint16 volume with bright spheres, its ground-truth instance labels, and the truth mask."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:16, :40, :40]
    labels = np.zeros((16, 40, 40), np.uint16)
    for i, (z, y, x) in enumerate([(8, 10, 10), (8, 28, 12), (7, 20, 30)], start=1):
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 25] = i
    image = (200 + 800 * (labels > 0) + rng.normal(0, 60, labels.shape)).clip(0, 65535).astype(np.uint16)
    meta = ImageMetadata.for_array(image, spacing=(2.0, 0.5, 0.5), unit="micrometer")
    img_path = write_image(tmp_path / "img.ome.tif", image, meta)
    gt_path = write_image(tmp_path / "gt.tif", labels, meta.replace(dtype="uint16"), labels=True)
    return img_path, gt_path, labels > 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: fmscope " + command in capsys.readouterr().out


def test_info_table_and_json(blobs: tuple[Path, Path, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    img, _, _ = blobs
    code, out, _ = run(capsys, "info", img)
    assert code == 0
    assert "(16, 40, 40)" in out and "uint16" in out and "ZYX" in out and "micrometer" in out
    code, out, _ = run(capsys, "info", img, "--json")
    info = json.loads(out)
    assert info["shape"] == [16, 40, 40] and info["axes"] == "ZYX" and info["spacing"] == [2.0, 0.5, 0.5]
    data = tifffile.imread(img)
    assert info["stats"]["min"] == data.min() and info["stats"]["max"] == data.max()


def test_convert_round_trip(
    blobs: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img, _, _ = blobs
    for name in ("vol.nii.gz", "vol.ome.zarr", "vol.h5"):
        code, _, err = run(capsys, "convert", img, tmp_path / name)
        assert code == 0, err
        back = read_image(tmp_path / name)
        np.testing.assert_array_equal(back.numpy(), tifffile.imread(img))
        assert back.meta.spacing == (2.0, 0.5, 0.5)
        assert (tmp_path / (name + ".fmscope.json")).exists()


def test_normalize_writes_unit_range_and_profile(
    blobs: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img, _, _ = blobs
    out = tmp_path / "norm.tif"
    code, _, err = run(capsys, "normalize", img, out, "--low", "1", "--high", "99")
    assert code == 0, err
    data = read_image(out).numpy()
    assert data.dtype == np.float32 and data.min() == 0.0 and data.max() == 1.0
    profile = json.loads((tmp_path / "norm.tif.profile.json").read_text())
    assert "source_dtype" in json.dumps(profile) or "uint16" in json.dumps(profile)


@pytest.mark.parametrize("method", ["otsu", "li", "triangle", "local", "watershed"])
def test_segment_then_evaluate(
    method: str, blobs: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img, gt, truth = blobs
    pred = tmp_path / f"pred_{method}.tif"
    extra = ["--block-size", "21", "--offset", "-100"] if method == "local" else []
    code, out, err = run(capsys, "segment", img, "-o", pred, "--method", method, "--smooth", "1", *extra)
    assert code == 0, err
    assert pred.exists() and (tmp_path / f"pred_{method}.tif.fmscope.json").exists()
    code, out, err = run(capsys, "evaluate", pred, gt, "--instances", "--json")
    assert code == 0, err
    scores = json.loads(out)
    for key in ("dice", "iou", "accuracy", "precision", "recall", "f1_50", "ap_50", "f1_75"):
        assert 0.0 <= scores[key] <= 1.0, key
    # Otsu/watershed split this bimodal image cleanly; Li and triangle set lower thresholds (halo voxels included).
    floor = {"otsu": 0.9, "watershed": 0.9, "li": 0.75, "triangle": 0.3, "local": 0.6}[method]
    assert scores["dice"] > floor, scores
    if method in ("otsu", "watershed"):
        assert scores["f1_50"] == 1.0  # three well-separated spheres, all found


def test_evaluate_table(blobs: tuple[Path, Path, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    _, gt, _ = blobs
    code, out, _ = run(capsys, "evaluate", gt, gt)
    assert code == 0
    assert "dice" in out and "1.0000" in out


@pytest.mark.slow
def test_quickstart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every stage of the quickstart on the tiny budget (a fraction of the full run's time; `make demo` runs that)."""
    out = tmp_path / "qs"
    code, stdout, err = run(capsys, "quickstart", "--out", out, "--budget", "tiny", "--pretrain-steps", "3")
    assert code == 0, err
    record = json.loads((out / "run.fmscope.json").read_text())["parameters"]
    assert record["budget"] == "tiny" and record["pretrain_steps"] == 3 and record["model"] == "unet-tiny"
    report = (out / "report.md").read_text()
    assert "| lightsheet |" in report and "| em |" in report
    assert "## Pretraining (image + text)" in report and "| last step |" in report
    assert (out / "pretrain" / "run" / "model" / "pretrainer.safetensors").exists()
    assert (out / "pretrain" / "run" / "loss_curves.png").exists()
    assert (out / "lightsheet_overlay.png").stat().st_size > 10_000
    assert "## Few-shot fine-tuning and prediction" in report
    labels = ("fine-tuned from the 3-step phantom pretraining", "fine-tuned from scratch", "Otsu")
    assert all(f"| {m} |" in report for m in labels)
    assert (out / "finetune" / "run_pretrained" / "model" / "task.json").exists()
    assert (out / "finetune" / "finetune_overlay.png").stat().st_size > 10_000
    rows = json.loads((out / "metrics.json").read_text())
    assert all(0 <= r["dice"] <= 1 for r in rows)
    # a second run refuses to overwrite and leaves the first report untouched
    code, _, err = run(capsys, "quickstart", "--out", out, "--budget", "tiny", "--pretrain-steps", "0")
    assert code == 1 and "exists" in err
    assert (out / "report.md").read_text() == report


def test_quickstart_budgets_and_bad_budgets(tmp_path: Path) -> None:
    from fmscope.cli.main import build_parser
    from fmscope.evaluation.quickstart import BUDGETS, QuickstartBudget, run_quickstart

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    budget = next(a for a in commands.choices["quickstart"]._actions if a.dest == "budget")  # type: ignore[index]
    assert tuple(budget.choices) == tuple(BUDGETS) and budget.default == "full"  # the CLI lists the library's names
    assert BUDGETS["full"] == QuickstartBudget()
    with pytest.raises(InvalidInputError, match="budget: expected one of"):
        run_quickstart(tmp_path / "a", budget="huge")
    with pytest.raises(InvalidInputError, match="pretrain_steps"):
        run_quickstart(tmp_path / "b", budget="tiny", pretrain_steps=-1)
    for bad in ({"finetune_shape": (16, 64, 64)}, {"pretrain_shape": (32, 32)}, {"finetune_epochs": 0}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            QuickstartBudget(**bad)  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = [
    # (argv builder, expected fragment in the one-line error)
    (lambda d, img: ["info", d / "missing.tif"], "does not exist"),
    (lambda d, img: ["info", _write(d / "x.abc", b"hello")], "x.abc"),
    (lambda d, img: ["info", _write(d / "trunc.tif", tifffile_bytes()[:300])], "trunc.tif"),
    (lambda d, img: ["info", _write(d / "empty.nii.gz", b"")], "empty.nii.gz"),
    (lambda d, img: ["segment", img, "-o", img], "exists"),
    (lambda d, img: ["convert", img, img], "exists"),
    (lambda d, img: ["segment", four_d(d), "-o", d / "o.tif"], "four.tif"),
    (lambda d, img: ["evaluate", img, small(d)], "shape"),
    (lambda d, img: ["segment", img, "-o", d / "nodir" / "o.tif"], "does not exist"),
    (lambda d, img: ["evaluate", img, img, "--roi", "a:b"], "--roi"),
]


def tifffile_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(4000, dtype=np.uint16).reshape(10, 20, 20))
    return buf.getvalue()


def four_d(d: Path) -> Path:
    data = np.zeros((2, 3, 8, 8), np.float32)
    return write_image(d / "four.tif", data, ImageMetadata.for_array(data, axes="TZYX"))


def small(d: Path) -> Path:
    return write_image(d / "small.tif", np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize(("build", "fragment"), BAD_INPUTS)
def test_bad_input_one_line_error(
    build, fragment: str, blobs: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img, _, _ = blobs
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = build(tmp_path, img)
    created = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == created, "partial output left behind"
    assert set(before) <= set(created)


def test_nan_input_is_handled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Documented treatment: NaN voxels are excluded from statistics and are never foreground."""
    data = np.zeros((4, 32, 32), np.float32)
    data[:, 8:20, 8:20] = 10.0
    data[0, 0, :5] = np.nan
    data[1, 1, :3] = np.inf
    path = write_image(tmp_path / "nan.tif", data)
    code, out, err = run(capsys, "info", path, "--json")
    assert code == 0, err
    assert json.loads(out)["stats"]["n_nonfinite"] == 8
    code, _, err = run(capsys, "segment", path, "-o", tmp_path / "seg.tif")
    assert code == 0, err
    seg = read_image(tmp_path / "seg.tif").numpy()
    assert not seg[0, 0, :5].any()
    assert seg[:, 8:20, 8:20].all()


def test_console_script_exit_codes(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("fmscope")
    ok = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert ok.returncode == 0 and "fmscope" in ok.stdout
    bad = subprocess.run([exe, "info", tmp_path / "nope.tif"], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "nope.tif" in bad.stderr
