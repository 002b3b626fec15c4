"""Blockwise work (issue 16): the block plan, done flags and the runner, and ``predict_blockwise`` in process, on a
LocalCluster of threads and of processes, interrupted and resumed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.inference.blockwise import Block, BlockPlan, DoneFlags, done_path, plan_blocks, run_blocks
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.models import create_model
from fmscope.tasks.model import TaskModel, TaskSpec, save_task_model
from fmscope.tasks.predict import predict_file
from fmscope.tasks.predict_blockwise import BlockwiseConfig, PredictBlock, predict_blockwise
from index_writer import IndexWriter


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 40)] * 3),
    chunks=st.tuples(*[st.integers(1, 9)] * 3),
    factor=st.tuples(*[st.integers(1, 3)] * 3),
    halo=st.tuples(*[st.integers(0, 4)] * 3),
)
def test_cores_tile_the_volume_once_and_reads_hold_the_core(shape, chunks, factor, halo) -> None:  # type: ignore[no-untyped-def]
    block = tuple(c * f for c, f in zip(chunks, factor, strict=True))
    halo = tuple(min(h, b) for h, b in zip(halo, block, strict=True))
    plan = BlockPlan(shape, block, halo, chunks)
    count = np.zeros(shape, np.uint8)
    for b in plan.blocks():
        count[b.core] += 1
        probe = np.zeros(shape, bool)
        probe[b.core] = True
        assert probe[b.read][b.inner].all() and probe[b.read][b.inner].size == probe[b.core].size
        assert all(r.start >= 0 and r.stop <= s for r, s in zip(b.read, shape, strict=True))
        assert all(c.start % k == 0 for c, k in zip(b.core, chunks, strict=True))  # a core starts on a chunk
    assert (count == 1).all()
    assert BlockPlan.from_dict(plan.to_dict()) == plan


def test_bad_geometry_names_the_flag_and_a_mask_skips_empty_blocks() -> None:
    with pytest.raises(InvalidInputError, match="--block-shape: .* not a multiple of the output's chunks"):
        BlockPlan((64, 64, 64), (48, 64, 64), (8, 8, 8), (32, 32, 32))
    with pytest.raises(InvalidInputError, match="--block-shape: .* smaller than the halo"):
        BlockPlan((64, 64, 64), (8, 8, 8), (16, 0, 0), (8, 8, 8))
    with pytest.raises(InvalidInputError, match="--halo: expected 3 sizes"):
        BlockPlan((64, 64, 64), (8, 8, 8), (1, 1), (8, 8, 8))
    mask = np.zeros((4, 4, 4), bool)  # a quarter-resolution mask: foreground in the first eighth only
    mask[:2, :2, :2] = True
    plan = plan_blocks((64, 64, 64), (32, 32, 32), (4, 4, 4), (16, 16, 16), mask=mask)
    assert len(plan) == 8 and plan.skipped == tuple(range(1, 8)) and [b.index for b in plan.blocks()] == [0]
    with pytest.raises(InvalidInputError, match="mask: expected 3 axes"):
        plan_blocks((64, 64, 64), (32, 32, 32), (4, 4, 4), (16, 16, 16), mask=np.ones((4, 4)))


class Double:
    """A block function writing 2 x input into an output array (failing ``fail`` times on block ``bad``)."""

    def __init__(self, source: np.ndarray, target: np.ndarray, bad: int = -1, fail: int = 0) -> None:
        self.source, self.target, self.bad, self.fail = source, target, bad, fail

    def __call__(self, block: Block) -> None:
        if block.index == self.bad and self.fail:
            self.fail -= 1
            raise OSError("disk full")
        self.target[block.core] = 2 * self.source[block.read][block.inner]


def test_the_runner_retries_reports_by_index_and_resumes(tmp_path: Path) -> None:
    source = np.arange(24 * 16 * 16, dtype=np.float32).reshape(24, 16, 16)
    plan = BlockPlan(source.shape, (8, 8, 8), (2, 2, 2), (8, 8, 8))
    target = np.zeros_like(source)
    flags = DoneFlags(tmp_path / "f.done.zarr", len(plan), create=True)
    once = run_blocks(plan, Double(source, target, bad=3, fail=1), flags, retries=1)  # fails once, then succeeds
    assert once.complete and once.computed == tuple(range(len(plan))) and np.array_equal(target, 2 * source)
    flags = DoneFlags(tmp_path / "g.done.zarr", len(plan), create=True)
    target[:] = 0
    first = run_blocks(plan, Double(source, target, bad=5, fail=9), flags, retries=2)
    assert list(first.failed) == [5] and "OSError: disk full" in first.failed[5] and not flags.is_done(5)
    again = run_blocks(plan, Double(source, target), DoneFlags(tmp_path / "g.done.zarr", len(plan)))
    assert again.computed == (5,) and len(again.already_done) == len(plan) - 1 and np.array_equal(target, 2 * source)
    with pytest.raises(InvalidInputError, match="--retries"):
        run_blocks(plan, Double(source, target), flags, retries=-1)


# ---- prediction --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("blockwise")
    torch.manual_seed(0)
    model = TaskModel(create_model("unet-tiny"), TaskSpec("segment", ("background", "ball"))).eval()
    folder = save_task_model(model, root / "model")
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[:40, :48, :56]
    volume = 500 + 400 * (((zz - 20) ** 2 + (yy - 24) ** 2 + (xx - 28) ** 2) < 12**2) + rng.normal(0, 30, (40, 48, 56))
    volume = volume.astype(np.uint16)
    write_image(root / "in.zarr", volume, ImageMetadata.for_array(volume))
    write_image(root / "in.tif", volume, ImageMetadata.for_array(volume))
    other = TaskModel(create_model("unet-tiny"), TaskSpec("segment", ("background", "ball"))).eval()
    return folder, root / "in.zarr", save_task_model(other, root / "other")


SMALL = BlockwiseConfig(block_shape=(16, 16, 16), chunks=(8, 16, 16), halo=(8, 8, 8))


def test_blockwise_prediction_resumes_bit_identically_and_matches_the_whole_volume(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, volume, other = model_and_volume
    whole = predict_blockwise(model, volume, tmp_path / "whole.zarr", SMALL)
    assert whole.result.complete and len(whole.result.computed) == len(whole.plan) == 3 * 3 * 4
    reference = read_image(tmp_path / "whole.zarr").numpy()
    in_memory = read_image(predict_file(model, volume.with_suffix(".tif"), tmp_path / "p.tif").output).numpy()
    one_block = BlockwiseConfig(block_shape=(40, 48, 56), chunks=(8, 16, 8), halo=(0, 0, 0))
    predict_blockwise(model, volume, tmp_path / "one.zarr", one_block)  # one block: the in-memory path exactly
    np.testing.assert_array_equal(read_image(tmp_path / "one.zarr").numpy(), in_memory)
    print(f"\nblocks of 16^3 + halo 8 vs one window pass over the volume: {float((reference == in_memory).mean()):.4f}")

    real = PredictBlock.__call__

    def crash_on_7(self: PredictBlock, block: Block) -> None:
        if block.index == 7:
            raise MemoryError("killed")
        real(self, block)

    monkeypatch.setattr(PredictBlock, "__call__", crash_on_7)
    broken = predict_blockwise(model, volume, tmp_path / "broken.zarr", SMALL)
    assert list(broken.result.failed) == [7]
    monkeypatch.setattr(PredictBlock, "__call__", real)
    resumed = predict_blockwise(model, volume, tmp_path / "broken.zarr", SMALL)
    assert resumed.result.computed == (7,) and resumed.result.complete
    np.testing.assert_array_equal(read_image(tmp_path / "broken.zarr").numpy(), reference)

    with pytest.raises(InvalidInputError, match="another plan, input or settings .*model:"):
        predict_blockwise(other, volume, tmp_path / "broken.zarr", SMALL)
    with pytest.raises(InvalidInputError, match="another plan, input or settings .*plan:"):
        predict_blockwise(model, volume, tmp_path / "broken.zarr", BlockwiseConfig(block_shape=(32, 16, 16),
                                                                                   chunks=(8, 16, 16)))  # fmt: skip
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_blockwise(model, volume, tmp_path / "broken.zarr", BlockwiseConfig(chunks=(8, 16, 16), resume=False))
    assert done_path(tmp_path / "broken.zarr").is_dir()


def test_blockwise_prediction_on_a_local_cluster_equals_in_process(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    model, volume, _ = model_and_volume
    alone = predict_blockwise(model, volume, tmp_path / "alone.zarr", SMALL)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        config = BlockwiseConfig(block_shape=(16, 16, 16), chunks=(8, 16, 16), halo=(8, 8, 8),
                                 scheduler=cluster.scheduler_address)  # fmt: skip
        on_cluster = predict_blockwise(model, volume, tmp_path / "cluster.zarr", config)
        with Client(cluster) as client:
            assert client.scheduler_info()["workers"]
    assert on_cluster.result.complete and len(on_cluster.result.computed) == len(alone.plan)
    np.testing.assert_array_equal(read_image(tmp_path / "cluster.zarr").numpy(),
                                  read_image(tmp_path / "alone.zarr").numpy())  # fmt: skip


@pytest.mark.slow
def test_blockwise_prediction_on_worker_processes(model_and_volume: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, volume, _ = model_and_volume
    alone = predict_blockwise(model, volume, tmp_path / "alone.zarr", SMALL)
    config = BlockwiseConfig(block_shape=(16, 16, 16), chunks=(8, 16, 16), halo=(8, 8, 8), workers=2,
                             worker_memory="1GiB")  # fmt: skip
    spawned = predict_blockwise(model, volume, tmp_path / "spawned.zarr", config)
    assert spawned.result.complete and len(spawned.result.computed) == len(alone.plan)
    np.testing.assert_array_equal(read_image(tmp_path / "spawned.zarr").numpy(),
                                  read_image(tmp_path / "alone.zarr").numpy())  # fmt: skip


def test_a_scheduler_that_does_not_answer_is_refused_in_time(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, volume, _ = model_and_volume
    t0 = time.perf_counter()
    config = BlockwiseConfig(chunks=(8, 16, 16), scheduler="tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(InvalidInputError, match="--scheduler: no Dask scheduler answered"):
        predict_blockwise(model, volume, tmp_path / "x.zarr", config)
    assert time.perf_counter() - t0 < 30 and not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(InvalidInputError, match="--workers and --scheduler"):
        BlockwiseConfig(workers=2, scheduler="tcp://x:1")


def test_cli_blockwise_predict_survives_kill_9_and_resumes_bit_identically(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal
    import subprocess
    import sys

    import zarr

    from conftest import run

    model, volume, _ = model_and_volume
    flags = ["--block-shape", "8", "--chunks", "8", "--halo", "8"]
    code, out, err = run(capsys, "predict", model, volume, "-o", tmp_path / "ref.zarr", *flags)
    assert code == 0, err
    assert "210 blocks of (8, 8, 8) (halo (8, 8, 8)): 210 computed, 0 done before" in out
    code, out, _ = run(capsys, "predict", model, volume, "-o", tmp_path / "ref.zarr", *flags)
    assert code == 0 and "0 computed, 210 done before" in out  # resumed by default: nothing left to do
    code, _, err = run(capsys, "predict", model, volume, "-o", tmp_path / "x.zarr", "--workers", "2", "--flips")
    assert code == 1 and "drop --flips" in err

    cmd = [sys.executable, "-m", "fmscope.cli.main", "predict", str(model), str(volume), "-o", str(tmp_path / "k.zarr"),
           *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 120:
        try:
            done = int(np.count_nonzero(zarr.open_array(str(done_path(tmp_path / "k.zarr")), mode="r")[:]))
        except (FileNotFoundError, ValueError, KeyError):
            done = 0
        if done >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and 20 <= done < 210, (proc.returncode, done)
    code, out, err = run(capsys, "predict", model, volume, "-o", tmp_path / "k.zarr", *flags)
    assert code == 0, err
    left = int(out.split(" computed")[0].rsplit(" ", 1)[1])
    assert 0 < left <= 210 - done
    np.testing.assert_array_equal(read_image(tmp_path / "k.zarr").numpy(), read_image(tmp_path / "ref.zarr").numpy())


def _index_plan(tmp_path: Path) -> tuple[BlockPlan, Path, DoneFlags, np.ndarray]:
    import zarr

    plan = BlockPlan((32, 32, 32), (16, 16, 16), (0, 0, 0), (16, 16, 16))
    out = tmp_path / "out.zarr"
    zarr.create_array(store=str(out), shape=plan.shape, chunks=plan.chunks, dtype=np.uint8, fill_value=0)
    expected = np.zeros(plan.shape, np.uint8)
    for b in plan.blocks():
        expected[b.core] = b.index + 1
    return plan, out, DoneFlags(done_path(out), len(plan), create=True), expected


def test_a_worker_killed_mid_run_has_its_block_retried(tmp_path: Path) -> None:
    from fmscope.inference.blockwise_output import Cluster

    plan, out, flags, expected = _index_plan(tmp_path)
    marker = tmp_path / "killed"
    # IndexWriter lives in a module without torch: the workers import it, and stay within 512 MiB
    with Cluster(BlockwiseConfig(workers=2, worker_memory="512MiB")) as cluster:
        result = run_blocks(plan, IndexWriter(str(out), str(marker), victim=3), flags, client=cluster.client)
    assert marker.exists()  # a worker did die on block 3
    assert result.complete and result.computed == tuple(range(len(plan)))
    np.testing.assert_array_equal(read_image(out).numpy(), expected)


def test_a_disk_full_while_a_block_is_written_leaves_it_unflagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import zarr.storage

    plan, out, flags, expected = _index_plan(tmp_path)
    real = zarr.storage.LocalStore.set

    async def full(self: zarr.storage.LocalStore, key: str, value: object) -> None:
        if Path(self.root) == out and key == "c/0/0/1":  # the chunk of block 1 (grid position (0, 0, 1))
            raise OSError(errno.ENOSPC, "No space left on device")
        await real(self, key, value)  # type: ignore[arg-type]

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)
    first = run_blocks(plan, IndexWriter(str(out)), flags, retries=1)
    assert list(first.failed) == [1] and "No space left on device" in first.failed[1] and not flags.is_done(1)
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real)
    again = run_blocks(plan, IndexWriter(str(out)), flags)
    assert again.computed == (1,) and again.complete
    np.testing.assert_array_equal(read_image(out).numpy(), expected)


def test_blockwise_instances_are_the_components_of_the_blockwise_classes_across_faces(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run
    from fmscope.segment import label_components
    from test_inference_segment_blockwise import same_partition

    model, volume, _ = model_and_volume
    classes = predict_blockwise(model, volume, tmp_path / "classes.zarr", SMALL)
    done = predict_blockwise(model, volume, tmp_path / "objects.zarr", SMALL, instances="components")
    expected = label_components(read_image(tmp_path / "classes.zarr").numpy() > 0)
    got = read_image(tmp_path / "objects.zarr").numpy()
    assert classes.objects is None and done.objects == int(expected.max()) > 1
    assert got.dtype == np.uint32 and same_partition(got, expected)  # objects cut by block faces keep one id
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("objects.zarr"))  # the stitch's scratch
    assert left == ["objects.zarr", "objects.zarr.done.zarr", "objects.zarr.fmscope.json", "objects.zarr.stitched.json"]
    again = predict_blockwise(model, volume, tmp_path / "objects.zarr", SMALL, instances="components")
    assert again.result.computed == () and again.objects == done.objects
    np.testing.assert_array_equal(read_image(tmp_path / "objects.zarr").numpy(), got)
    flags = ["--block-shape", "16", "--chunks", "8", "16", "16", "--halo", "8"]
    code, out, err = run(capsys, "predict", model, volume, "-o", tmp_path / "c.zarr", "--instances", "components",
                         *flags)  # fmt: skip
    assert code == 0, err
    assert f", {done.objects} objects ->" in out


def test_a_2d_model_predicts_whole_slices_blockwise_equal_to_fmscope_predict(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A 2D segmenter (as a session's training round makes) on a stack: blocks of whole slices, each slice windowed
    by its own percentiles, equal voxel for voxel to the in-memory slice-by-slice path; resumable; a block shape that
    cuts the slices or a halo is refused naming the flag."""
    from fmscope.segment import label_components

    _, volume, _ = model_and_volume
    torch.manual_seed(1)
    net = create_model("unet-tiny", spatial_dims=2, patch_size=(32, 32))
    model = save_task_model(TaskModel(net, TaskSpec("segment", ("background", "ball"))).eval(), tmp_path / "m2d")
    in_memory = read_image(predict_file(model, volume.with_suffix(".tif"), tmp_path / "p.tif").output).numpy()
    config = BlockwiseConfig(block_shape=(16,), chunks=(8,))
    done = predict_blockwise(model, volume, tmp_path / "out.zarr", config)
    assert done.result.complete and len(done.plan) == 3 and done.plan.halo == (0, 0, 0)
    assert done.plan.block == (16, 48, 56) and done.plan.chunks == (8, 48, 56)
    np.testing.assert_array_equal(read_image(tmp_path / "out.zarr").numpy(), in_memory)
    again = predict_blockwise(model, volume, tmp_path / "out.zarr", config)
    assert again.result.computed == () and len(again.result.already_done) == 3
    objects = predict_blockwise(model, volume, tmp_path / "objects.zarr", config, instances="components")
    assert objects.objects == int(label_components(in_memory > 0).max())
    with pytest.raises(InvalidInputError, match="--block-shape: a 2D model predicts whole slices"):
        predict_blockwise(model, volume, tmp_path / "x.zarr", BlockwiseConfig(block_shape=(16, 16, 16)))
    with pytest.raises(InvalidInputError, match="--halo: a 2D model predicts each slice alone"):
        predict_blockwise(model, volume, tmp_path / "y.zarr", BlockwiseConfig(halo=(2, 0, 0)))


def test_blockwise_watershed_keeps_one_id_per_object_cut_by_a_face_as_in_memory(
    model_and_volume: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A segmenter that finds the bright balls exactly (its logits threshold the windowed input), 4 balls across the
    face z = 16, two of them touching: blockwise watershed gives the partition of the in-memory one (``fmscope
    predict --instances watershed``); an unknown split is refused; a components output is not resumed as one."""
    from conftest import run
    from test_inference_segment_blockwise import same_partition

    def thresholds(self: TaskModel, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 20 * (x - 0.5)], dim=1)

    monkeypatch.setattr(TaskModel, "dense", thresholds)
    model, _, _ = model_and_volume
    x = np.zeros((32, 48, 48), np.uint16) + 100
    grid = np.indices(x.shape)
    for c in [(15, 10, 14), (16, 22, 16), (16, 24, 36), (8, 38, 40)]:  # the first two touch
        x[sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) < 7**2] = 1000
    write_image(tmp_path / "in.zarr", x, ImageMetadata.for_array(x))
    write_image(tmp_path / "in.tif", x, ImageMetadata.for_array(x))
    whole = read_image(predict_file(model, tmp_path / "in.tif", tmp_path / "w.tif", instances="watershed").output)
    expected = whole.numpy()
    config = BlockwiseConfig(block_shape=16, chunks=16, halo=16)
    done = predict_blockwise(model, tmp_path / "in.zarr", tmp_path / "ws.zarr", config, instances="watershed")
    got = read_image(tmp_path / "ws.zarr").numpy()
    assert done.result.complete and done.objects == int(expected.max()) == 4
    assert got.dtype == np.uint32 and same_partition(got, expected)
    with pytest.raises(InvalidInputError, match="--instances: expected components or watershed"):
        predict_blockwise(model, tmp_path / "in.zarr", tmp_path / "x.zarr", config, instances="voronoi")
    flags = ["--block-shape", "16", "--chunks", "16", "--halo", "16"]
    code, _, err = run(capsys, "predict", model, tmp_path / "in.zarr", "-o", tmp_path / "ws.zarr", "--instances",
                       "components", *flags)  # fmt: skip
    assert code != 0 and "instances" in err  # another record: refused, not mixed
