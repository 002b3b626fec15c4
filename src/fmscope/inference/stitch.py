"""Instance labels computed block by block, made one labelling: objects cut by block faces keep one id.

Each block writes its core's labels as block-local ids ``1..n`` into an unstitched Zarr array and its count ``n``
into a counts array (before its done flag). Stitching then:

1. gives every block an offset (the cumulative counts), so that ``offset + local id`` is unique in the volume;
2. reads, for every pair of face-adjacent blocks, the two planes of voxels on either side of their shared face and
   pairs the ids that touch across it (6-connectivity across the face). ``rule="touching"`` merges every touching
   pair (exact for connected components: the result equals labelling the whole mask at once, up to the order of the
   ids); ``rule="mutual"`` merges a pair only when each is the other's largest contact across that face (for
   watershed, whose objects may touch their neighbours: a nucleus cut by the face is one object, two nuclei that
   merely touch at the face stay two); ``rule="overlap"`` (watershed labelled over core + halo) pairs, instead of
   contacts, the ids that label *the same voxels*: a block that labelled its halo too keeps its labels of the first
   plane past each of its far faces (``OUT.zarr.ahead/INDEX.npz``, see :func:`write_region_labels`), the
   neighbour's own first plane is compared with it voxel for voxel, and pairs that are each other's largest overlap
   are merged. Contacts mislead where an object's piece beyond the face is small and its neighbour's is large (two
   touching nuclei both cut by the face); overlaps do not, wherever the two blocks split the objects alike. Along an
   axis without halo the contact rule of ``mutual`` is used;
3. finds the connected groups of merged ids (``scipy.sparse.csgraph``) and numbers them ``1..N`` in the order of
   their smallest id: a lookup table saved beside the output (``OUT.zarr.lut.npz``, atomic write);
4. rewrites every block through the table into the output (a second blockwise pass with its own done flags);
5. once every block is rewritten, records the number of objects (``OUT.zarr.stitched.json``, atomic) and removes the
   unstitched labels, the counts, the planes, the table and the flags of step 4 (a second label volume's worth of
   disk). A rerun finds the record and returns at once.

The table is a function of the unstitched labels only, so a resumed run recomputes the same one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block, BlockPlan
from fmscope.utils.atomic import atomic_output, remove_path

logger = logging.getLogger(__name__)

MergeRule = Literal["touching", "mutual", "overlap"]
RULES = ("touching", "mutual", "overlap")


def _face_neighbours(plan: BlockPlan) -> list[tuple[int, int, int]]:
    """``(block, neighbour, axis)`` for every pair of blocks sharing a face, the neighbour after the block."""
    out = []
    for index in range(len(plan)):
        position = np.unravel_index(index, plan.grid)
        for axis in range(len(plan.grid)):
            if position[axis] + 1 < plan.grid[axis]:
                after = list(position)
                after[axis] += 1
                out.append((index, int(np.ravel_multi_index(after, plan.grid)), axis))
    return out


def _plane(block: Block, axis: int, last: bool) -> tuple[slice, ...]:
    core = list(block.core)
    at = core[axis].stop - 1 if last else core[axis].start
    core[axis] = slice(at, at + 1)
    return tuple(core)


def _mutual(pairs: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """The pairs that are each member's largest contact (ties: the smaller id)."""
    keep = np.zeros(len(pairs), dtype=bool)
    best = {}
    for side in (0, 1):
        order = np.lexsort((pairs[:, 1 - side], -contact, pairs[:, side]))  # by id, then most contact first
        ids = pairs[order, side]
        first = order[np.r_[True, ids[1:] != ids[:-1]]]
        best[side] = set(first.tolist())
    keep[list(best[0] & best[1])] = True
    return pairs[keep]


def face_pairs(labels: Any, plan: BlockPlan, offsets: np.ndarray, rule: MergeRule = "touching",
               ahead: Path | None = None) -> np.ndarray:  # fmt: skip
    """``(k, 2)`` int64 pairs of volume-unique ids (``offsets[block] + local id``) to merge across block faces;
    ``ahead``: the folder of the blocks' planes past their faces (rule ``overlap``)."""
    if rule not in RULES:
        raise InvalidInputError(f"rule: expected one of {RULES}, got {rule!r}")
    if rule == "overlap" and ahead is None:
        raise InvalidInputError("ahead: the overlap rule needs the folder of the planes past the block faces")
    found = [np.zeros((0, 2), dtype=np.int64)]
    skipped = set(plan.skipped)
    for index, after, axis in _face_neighbours(plan):
        if index in skipped or after in skipped:
            continue
        a, b = plan.block_at(index), plan.block_at(after)
        right = np.asarray(labels[_plane(b, axis, last=False)]).astype(np.int64).ravel()
        if rule == "overlap" and ahead is not None and plan.halo[axis] > 0:  # the same voxels, labelled by a and b
            with np.load(ahead / f"{index}.npz") as planes:
                left = planes[f"axis{axis}"].astype(np.int64).ravel()
        else:  # the voxels on either side of the face
            left = np.asarray(labels[_plane(a, axis, last=True)]).astype(np.int64).ravel()
        both = (left > 0) & (right > 0)
        if not both.any():
            continue
        touching = np.stack([left[both] + offsets[index], right[both] + offsets[after]], axis=1)
        pairs, contact = np.unique(touching, axis=0, return_counts=True)
        found.append(pairs if rule == "touching" else _mutual(pairs, contact))  # mutual largest contact / overlap
    return np.concatenate(found)


def lookup_table(n_ids: int, pairs: np.ndarray) -> np.ndarray:
    """uint32 table from the volume-unique ids ``0..n_ids`` to final ids: merged groups numbered ``1..N`` in the
    order of their smallest id, 0 kept 0."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_ids + 1,) * 2)
    _, component = connected_components(graph, directed=False)
    table = np.zeros(n_ids + 1, dtype=np.uint32)
    if n_ids:  # components are numbered in the order of their first node: by smallest id
        _, final = np.unique(component[1:], return_inverse=True)
        table[1:] = final + 1
    return table


def lut_path(output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".lut.npz")


def stitch_table(labels: Any, counts: Any, plan: BlockPlan, output: Path, rule: MergeRule) -> int:
    """Compute the offsets and the lookup table of a complete unstitched labelling and save them beside
    ``output`` (atomically); returns the number of objects."""
    n_ids = np.asarray(counts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_ids)[:-1]]).astype(np.int64)
    pairs = face_pairs(labels, plan, offsets, rule, ahead_path(output))
    table = lookup_table(int(n_ids.sum()), pairs)
    with atomic_output(lut_path(output), overwrite=True) as tmp:
        np.savez(tmp, table=table, offsets=offsets)
    n = int(table.max()) if table.size else 0
    logger.info("stitched %d block-local ids into %d objects (%d merges across faces)", int(n_ids.sum()), n,
                len(pairs))  # fmt: skip
    return n


class RelabelBlock:
    """The per-block function of step 4 (picklable): the block's local ids through the saved table."""

    def __init__(self, unstitched: str, output: str) -> None:
        self.unstitched, self.output = unstitched, output

    def __call__(self, block: Block) -> None:
        import zarr

        with np.load(lut_path(self.output)) as saved:
            table, offset = saved["table"], int(saved["offsets"][block.index])
        local = np.asarray(zarr.open_array(self.unstitched, mode="r")[block.core]).astype(np.int64)
        final = np.where(local > 0, table[np.where(local > 0, local + offset, 0)], 0).astype(np.uint32)
        zarr.open_array(self.output, mode="r+")[block.core] = final


# ---- the instance outputs of a blockwise run ------------------------------------------------------------------


def side_paths(output: Path) -> tuple[Path, Path, Path]:
    """The unstitched block-local labels, the per-block counts and the relabel flags of an instance output."""
    return (output.with_name(output.name + ".local.zarr"), output.with_name(output.name + ".counts.zarr"),
            output.with_name(output.name + ".relabel.done.zarr"))  # fmt: skip


def ahead_path(output: Path) -> Path:
    """The folder of the blocks' labels of the planes past their faces (rule ``overlap``)."""
    return output.with_name(output.name + ".ahead")


def stitched_path(output: Path) -> Path:
    """The record of a completed stitch: the number of objects."""
    return output.with_name(output.name + ".stitched.json")


def _scratch(output: Path) -> tuple[Path, ...]:
    """What the stitch needs until it completes, and not after."""
    return (*side_paths(output), lut_path(output), ahead_path(output))


def instance_side(output: Path) -> tuple[Path, ...]:
    """Everything besides the output that an instance run writes (removed with ``--overwrite``)."""
    return (*_scratch(output), stitched_path(output))


def create_instance_arrays(output: Path, plan: BlockPlan) -> None:
    """The uint32 output, its unstitched twin and the counts array, before any block runs."""
    import zarr

    unstitched, counts, _ = side_paths(output)
    for path in (output, unstitched):
        zarr.create_array(store=str(path), shape=plan.shape, chunks=plan.chunks, dtype=np.uint32, fill_value=0)
    zarr.create_array(store=str(counts), shape=(len(plan),), chunks=(1,), dtype=np.int64, fill_value=0)


def _sequential(core: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """The map from the ids of ``core`` to ``1..n`` in their order (0 and ids not in ``core`` to 0), and ``n``."""
    ids = np.unique(core)
    ids = ids[ids > 0]

    def renumber(values: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros(values.shape, dtype=np.uint32)
        position = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
        return np.where((values > 0) & (ids[position] == values), position + 1, 0).astype(np.uint32)

    return renumber, len(ids)


def write_block_labels(output: str | os.PathLike[str], block: Block, labels: np.ndarray) -> None:
    """A block's labels of its core, renumbered ``1..n``, into the unstitched array, then ``n`` into the counts."""
    renumber, n = _sequential(np.asarray(labels))
    _write_core(Path(output), block, renumber(np.asarray(labels)), n)


def write_region_labels(output: str | os.PathLike[str], block: Block, labels: np.ndarray) -> None:
    """A block's labels of the whole region it read (core + halo): the core as :func:`write_block_labels` does, and
    before it, for the overlap rule, the labels of the first plane past each far face of the core that the region
    holds (same numbering; ids found only in the halo become 0), saved atomically as ``OUT.zarr.ahead/INDEX.npz``."""
    labels = np.asarray(labels)
    core = labels[block.inner]
    renumber, n = _sequential(core)
    planes = {}
    for axis, inner in enumerate(block.inner):
        if inner.stop < labels.shape[axis]:  # the region reads past the face: a neighbour's plane
            at = list(block.inner)
            at[axis] = slice(inner.stop, inner.stop + 1)
            planes[f"axis{axis}"] = renumber(labels[tuple(at)])
    folder = ahead_path(Path(output))
    folder.mkdir(exist_ok=True)
    with atomic_output(folder / f"{block.index}.npz", overwrite=True) as tmp:
        np.savez_compressed(tmp, allow_pickle=False, **planes)
    _write_core(Path(output), block, renumber(core), n)


def _write_core(output: Path, block: Block, local: np.ndarray, n: int) -> None:
    import zarr

    unstitched, counts, _ = side_paths(output)
    zarr.open_array(str(unstitched), mode="r+")[block.core] = local
    zarr.open_array(str(counts), mode="r+")[block.index] = n


def stitch_blocks(plan: BlockPlan, output: Path, rule: MergeRule, client: Any, retries: int) -> int | None:
    """Merge the block-local labels across faces and write the final labels (resumable: its own done flags);
    the number of objects, or None when some relabelling block failed."""
    import zarr

    from fmscope.inference.blockwise import DoneFlags, run_blocks

    stitched = stitched_path(output)
    if stitched.exists():  # completed before: only what a crash may have left behind is removed
        for path in _scratch(output):
            remove_path(path)
        return int(json.loads(stitched.read_text(encoding="utf-8"))["objects"])
    unstitched, counts_path, relabel_flags = side_paths(output)
    counts = np.asarray(zarr.open_array(str(counts_path), mode="r")[:])
    objects = stitch_table(zarr.open_array(str(unstitched), mode="r"), counts, plan, output, rule)
    flags = DoneFlags(relabel_flags, len(plan), create=not relabel_flags.exists())
    relabel = BlockPlan(plan.shape, plan.block, tuple(0 for _ in plan.shape), plan.chunks, plan.skipped)
    done = run_blocks(relabel, RelabelBlock(str(unstitched), str(output)), flags, client=client, retries=retries)
    if not done.complete:
        logger.error("relabelling failed for blocks %s; rerun the same command", sorted(done.failed))
        return None
    with atomic_output(stitched, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"objects": objects}), encoding="utf-8")
    for path in _scratch(output):
        remove_path(path)
    return objects
