"""Typed configuration of a cross-validated benchmark (``fmscope benchmark CONFIG.yaml -o REPORT``).

A config names the data (one entry per *datatype*: a structure, a target or a task on one dataset), the protocol
(folds, training sizes, held-out test size, seed), the methods and their settings, and named *budgets*: partial
configs merged over the document by ``--budget NAME`` (``cpu-small`` for a laptop, ``gpu`` for the full size), then
``key=value`` overrides. Paths of data are relative to ``data_root``: by default the ``FMSCOPE_DATA`` environment
variable, else ``../shared/data``; a relative ``data_root`` is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fmscope.config import from_dict, load_yaml, merge_mappings, parse_overrides, to_dict
from fmscope.data.labelled import DEFAULT_CLASS_PATTERN, DEFAULT_LABEL_SUFFIXES
from fmscope.errors import InvalidInputError
from fmscope.tasks.registry import check_task_name, get_task

DATA_ENV = "FMSCOPE_DATA"


@dataclass(frozen=True)
class DatatypeConfig:
    """One datatype: where its labelled units come from and how they are made.

    Attributes:
        name: short name used in tables (``nucleus``, ``membranes``...).
        task: a registered task (``'segment'``, ``'classify'``, ``'deblur'``; :mod:`fmscope.tasks.registry`).
        folders: labelled folders or CSVs (any layout of :func:`fmscope.data.labelled.load_labelled`). Give
            exactly one of ``folders``, ``images`` (with ``labels``) or ``stack`` (with ``label_stack``).
        images, labels: a folder of images and a folder of masks, paired as ``pair_by`` says.
        pair_by: ``images``/``labels`` pairing: ``'name'`` (``label_suffixes`` stripped from the mask names) or
            ``'order'`` (sorted file names, for names that differ).
        stack, label_stack: a 3D stack and its label stack, each Z slice one 2D unit.
        include: regex searched in the image file name: only matching images are used.
        label_suffixes, class_pattern: as in ``load_labelled``.
        channel: channel to keep from multi-channel images (e.g. 0 of an RGBA PNG).
        crop: ``[[start, stop], ...]`` per spatial axis, applied to every image (e.g. to drop an SEM info bar).
        blocks: cut each image into this many blocks per axis (``[2, 2, 2]``: octants) to make more, smaller units.
        foreground: label values that are the structure (everything else is background); default: non-zero.
        instances: true instances: ``'labels'`` (label values are object ids), ``'components'`` (connected
            components of the foreground, face connectivity) or ``'none'`` (no instance metrics).
        split_instances: how a predicted mask becomes objects: ``'components'`` or ``'watershed'``.
        source: what makes two units one source volume: ``'auto'`` (the ``volNNN`` part of the file name, else the
            file) or ``'file'`` (every image file is its own source).
        split_by: held-out test set made of whole ``'source'`` volumes (default) or of single ``'unit'``s.
        test_size, train_sizes: this datatype's ``protocol.test_size`` and ``protocol.train_sizes``.
        test_sources: explicit held-out source ids (default: seeded choice).
        finetune: this datatype's fine-tuning settings (e.g. ``patch_size``), over the config's ``finetune``.
        otsu: overrides of :class:`fmscope.segment.ClassicalConfig` for the Otsu baseline.
        degradation: deblurring: the blur the Richardson-Lucy baseline inverts, and the synthesised degradation of
            images without a ``_blurred`` twin (:class:`fmscope.tasks.restoration.DegradationConfig` keys).
    """

    name: str
    task: str
    folders: tuple[str, ...] = ()
    images: str | None = None
    labels: str | None = None
    pair_by: Literal["name", "order"] = "name"
    stack: str | None = None
    label_stack: str | None = None
    include: str | None = None
    label_suffixes: tuple[str, ...] = DEFAULT_LABEL_SUFFIXES
    class_pattern: str = DEFAULT_CLASS_PATTERN
    channel: int | None = None
    crop: tuple[tuple[int, int], ...] | None = None
    blocks: tuple[int, ...] | None = None
    foreground: tuple[int, ...] | None = None
    instances: Literal["labels", "components", "none"] = "components"
    split_instances: Literal["components", "watershed"] = "components"
    source: Literal["auto", "file"] = "auto"
    split_by: Literal["source", "unit"] = "source"
    test_sources: tuple[str, ...] = ()
    test_size: int | None = None
    train_sizes: tuple[int, ...] | None = None
    finetune: dict[str, Any] = field(default_factory=dict)
    otsu: dict[str, Any] = field(default_factory=dict)
    degradation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise InvalidInputError(f"datatypes.name: expected a non-empty name without '/', got {self.name!r}")
        check_task_name(self.task, f"datatypes[{self.name}].task")
        if sum((bool(self.folders), self.stack is not None, self.images is not None)) != 1:
            raise InvalidInputError(f"datatypes[{self.name}]: give exactly one of 'folders', 'images' or 'stack'")
        if (self.images is None) != (self.labels is None):
            raise InvalidInputError(f"datatypes[{self.name}].labels: 'images' and 'labels' go together")
        if self.stack is not None and (self.label_stack is None or get_task(self.task).target != "mask"):
            raise InvalidInputError(f"datatypes[{self.name}].label_stack: a stack needs a label stack (segment only)")
        if self.blocks is not None and any(b < 1 for b in self.blocks):
            raise InvalidInputError(f"datatypes[{self.name}].blocks: expected integers >= 1, got {self.blocks}")
        if self.train_sizes is not None and (not self.train_sizes or min(self.train_sizes) < 1):
            raise InvalidInputError(
                f"datatypes[{self.name}].train_sizes: expected integers >= 1, got {self.train_sizes}"
            )
        if self.crop is not None and any(not 0 <= a < b for a, b in self.crop):
            raise InvalidInputError(f"datatypes[{self.name}].crop: expected [start, stop] with 0 <= start < stop")


@dataclass(frozen=True)
class ProtocolConfig:
    """The cross-validation protocol (reference: 3 folds, 5 / 15 training patches, 2 test patches, 80/20).

    Attributes:
        folds: the training pool (everything but the test set) is partitioned into ``folds`` parts by source
            volume (by unit where there are fewer sources than folds); fold ``f`` validates on part ``f`` and trains
            on the others.
        train_sizes: labelled units given to each learned method (training + validation), smallest first.
        test_size: at least this many units are held out per datatype (whole sources), never seen in training or
            model selection.
        val_fraction: share of the ``train_size`` units used for validation (at least 1 when ``train_size >= 2``;
            with a single unit, the training unit also selects the model).
        seed: seeds the splits; fold ``f`` trains with seed ``seed * 100 + f``.
    """

    folds: int = 3
    train_sizes: tuple[int, ...] = (5, 15)
    test_size: int = 2
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise InvalidInputError(f"protocol.folds: expected an integer >= 1, got {self.folds}")
        sizes = tuple(int(s) for s in self.train_sizes)
        if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise InvalidInputError(f"protocol.train_sizes: expected increasing integers >= 1, got {self.train_sizes}")
        object.__setattr__(self, "train_sizes", sizes)
        if self.test_size < 1:
            raise InvalidInputError(f"protocol.test_size: expected an integer >= 1, got {self.test_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InvalidInputError(f"protocol.val_fraction: expected a value in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class MethodSpec:
    """One compared method.

    Attributes:
        name: column name in the report (``scratch-unet``, ``pretrained-unet``, ``rf``...).
        kind: ``'otsu'``, ``'rf'`` (random forest on multi-scale filters), ``'finetune'`` (a task network),
            ``'pca-lr'``, ``'resnet18'`` (classification), ``'identity'``, ``'richardson-lucy'`` (deblurring),
            ``'cellpose'`` (an installed Cellpose with local weights, ``options.model``).
        init: finetune only: ``'scratch'``, a model folder, or ``'pretrain:NAME'`` for a model pretrained inside the
            report folder from the config's ``pretrain.NAME`` entry. A model folder that does not exist makes the
            method a skipped row with the reason.
        options: settings of the method: :class:`~fmscope.tasks.FinetuneConfig` keys (merged over the config's
            ``finetune``), :class:`~fmscope.segment.pixel_classifier.PixelClassifierConfig`, ``ResNetConfig``,
            ``n_components`` (pca-lr) or ``iterations`` (richardson-lucy).
    """

    name: str
    kind: str
    init: str = "scratch"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise InvalidInputError(f"methods.name: expected a non-empty name without '/', got {self.name!r}")
        kinds = _method_kinds()
        if self.kind not in kinds:
            raise InvalidInputError(f"methods[{self.name}].kind: expected one of {list(kinds)}, got {self.kind!r}")
        if self.init != "scratch" and not kinds[self.kind].fine_tunes:
            raise InvalidInputError(f"methods[{self.name}].init: only 'finetune' methods take an init")

    def applies_to(self, task: str) -> bool:
        """Whether this method can run on a datatype of ``task``."""
        return bool(_method_kinds()[self.kind].applies_to(task))


@dataclass(frozen=True)
class PretrainSpec:
    """A pretraining run made inside the report folder, used by finetune methods with ``init: 'pretrain:NAME'``.

    Attributes:
        config: pretraining config, a shipped name or a YAML file.
        data: the captioned data folder, relative to ``data_root``.
        overrides: ``key=value`` overrides of the pretraining config (e.g. ``train.steps=60``).
    """

    config: str = "unet-cpu"
    data: str = ""
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchmarkConfig:
    """A whole benchmark; see the module doc.

    Attributes:
        title: title of the report.
        data_root: folder the data paths are relative to (default: ``$FMSCOPE_DATA``, else ``../shared/data``).
        datatypes: the datatypes compared on (at least one).
        protocol: the cross-validation protocol.
        methods: the compared methods (at least one); each runs on the datatypes of its task.
        finetune: :class:`~fmscope.tasks.FinetuneConfig` keys shared by the finetune methods.
        pretrain: named pretraining runs (``init: 'pretrain:NAME'`` of a finetune method).
        examples: write example overlays (segmentation: fold 0, largest training size).
        keep_models: keep the fine-tuned models under ``REPORT/work`` (default: deleted after scoring).
        budget: the budget applied (set by ``--budget NAME``).
    """

    title: str = "fmscope benchmark"
    data_root: str = ""
    datatypes: tuple[DatatypeConfig, ...] = ()
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    methods: tuple[MethodSpec, ...] = ()
    finetune: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, PretrainSpec] = field(default_factory=dict)
    examples: bool = True
    keep_models: bool = False
    budget: str = ""

    def __post_init__(self) -> None:
        if not self.datatypes:
            raise InvalidInputError("datatypes: expected at least one datatype")
        if not self.methods:
            raise InvalidInputError("methods: expected at least one method")
        for what, names in (
            ("datatypes", [d.name for d in self.datatypes]),
            ("methods", [m.name for m in self.methods]),
        ):
            if len(set(names)) != len(names):
                raise InvalidInputError(f"{what}: names must be distinct, got {names}")
        pretrain = {
            k: v if isinstance(v, PretrainSpec) else from_dict(PretrainSpec, v, f"pretrain.{k}")
            for k, v in self.pretrain.items()
        }
        object.__setattr__(self, "pretrain", pretrain)
        for m in self.methods:
            if m.init.startswith("pretrain:") and m.init.split(":", 1)[1] not in pretrain:
                raise InvalidInputError(
                    f"methods[{m.name}].init: no pretrain entry {m.init.split(':', 1)[1]!r} (known: {sorted(pretrain)})"
                )
        from fmscope.evaluation.methods import check_settings

        check_settings(self)


def _method_kinds() -> dict[str, Any]:
    """The method table of :mod:`fmscope.evaluation.methods` (imported here when first needed: it imports this)."""
    from fmscope.evaluation.methods import METHODS

    return METHODS


def load_benchmark_config(
    path: str | os.PathLike[str], budget: str | None = None, overrides: list[str] | None = None
) -> tuple[BenchmarkConfig, Path]:
    """The resolved config (document <- budget ``budget`` <- ``overrides``) and the absolute data root."""
    data = load_yaml(path)
    budgets = data.pop("budgets", {}) or {}
    if budget:
        if budget not in budgets:
            raise InvalidInputError(f"--budget: expected one of {sorted(budgets)}, got {budget!r}")
        data = merge_mappings(data, budgets[budget])
        data["budget"] = budget
    data = merge_mappings(data, parse_overrides(overrides or []))
    config = from_dict(BenchmarkConfig, data)
    root = Path(config.data_root or os.environ.get(DATA_ENV, "") or "../shared/data").expanduser()
    return config, root.resolve()


def _field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` section of ``cls``'s docstring (``a, b: text`` documents both)."""
    docs: dict[str, str] = {}
    names: list[str] = []
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Attributes:"), len(lines))
    for line in lines[start:]:
        entry = re.match(r"    (\w+(?:, \w+)*): (.*)", line)
        if entry:
            names = entry.group(1).split(", ")
            docs.update((n, entry.group(2)) for n in names)
        elif line.startswith("        ") and names:
            docs.update((n, f"{docs[n]} {line.strip()}") for n in names)
        elif line.strip():
            break
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "`") for k, v in docs.items()}


def _flow(value: Any) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _template_lines(config: Any, indent: int, comments: bool = True) -> list[str]:
    """YAML lines of a config dataclass: every field with its value, each preceded by its description."""
    pad, docs, lines = " " * indent, _field_docs(type(config)), []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if comments:
            lines += [f"{pad}# {c}" for c in textwrap.wrap(docs.get(f.name, ""), max(40, 116 - indent))]
        if dataclasses.is_dataclass(value):
            lines += [f"{pad}{f.name}:", *_template_lines(value, indent + 2)]
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            lines.append(f"{pad}{f.name}:")
            for i, item in enumerate(value):
                lines += [f"{pad}  - # one entry of {f.name}", *_template_lines(item, indent + 4, comments and not i)]
        elif isinstance(value, dict) and value and dataclasses.is_dataclass(next(iter(value.values()))):
            lines.append(f"{pad}{f.name}:")
            for key, item in value.items():
                lines += [f"{pad}  {_flow(key)}:", *_template_lines(item, indent + 4, comments)]
        else:
            lines.append(f"{pad}{f.name}: {_flow(to_dict(config)[f.name])}")
    return lines


def benchmark_template() -> str:
    """A commented benchmark config (``fmscope benchmark --template``): every key of :class:`BenchmarkConfig` with
    its default and description, generated from the dataclasses; placeholder data paths, one example per list."""
    example = BenchmarkConfig(
        title="my benchmark",
        datatypes=(DatatypeConfig("my-structure", "segment", images="my_data/images", labels="my_data/labels"),),
        methods=(MethodSpec("otsu", "otsu"), MethodSpec("scratch-unet", "finetune")),
        pretrain={"my-pretraining": PretrainSpec(data="my_data/captioned_volumes")},
    )
    kinds = ", ".join(f"{k} ({'/'.join(v.tasks) or 'any task'})" for k, v in _method_kinds().items())
    header = [
        "# fmscope benchmark config: every key with its default (generated from fmscope.evaluation.bench_config).",
        "# Replace the placeholder paths (my_data/...), drop what you do not need, then run:",
        "#   fmscope benchmark THIS.yaml -o REPORT [--budget NAME] [key=value ...]",
        *(f"# {c}" for c in textwrap.wrap(f"Method kinds (and their tasks): {kinds}.", 114)),
    ]
    budgets = [
        "# Named partial configs merged over this document by --budget NAME, e.g.",
        "#   cpu-small: {protocol: {train_sizes: [2, 5]}, finetune: {epochs: 20}}",
        "budgets: {}",
    ]
    return "\n".join([*header, *_template_lines(example, 0), *budgets]) + "\n"
