"""The layers of DESIGN.md hold: no module imports a higher floor, no two subpackages import each other (directly or
round a cycle), and ``io``, ``intensity``, ``metrics`` and ``segment`` import no torch at module top.

An AST pass over every module of ``src/fmscope`` (nothing is imported). Every internal import counts:

- ``import fmscope.x`` and ``from fmscope.x import ...`` at module top, relative imports resolved;
- ``lazy`` imports inside a function, and ``type-only`` ones under ``if TYPE_CHECKING``;
- ``importlib.import_module("fmscope.x")`` with a constant name (or an f-string whose constant prefix names the
  subpackage, ``f"fmscope.x.{name}"``);
- ``string``: a constant naming an existing fmscope module, ``"fmscope.io.tiff"`` or ``"fmscope.io.tiff:read_tiff"``,
  as the lazy registries (formats, tasks, architectures) import by.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fmscope"

# The floors of DESIGN.md, section "Layers (lower never imports higher)", top to bottom; keep the two in step.
# Sideways imports within one floor are allowed. DESIGN.md does not name two packages; they are placed as
# notes/architecture_review.md (section 1) placed them: `segment` (numpy/skimage, imports only errors) with io,
# `text` (text encoders) with models. `__init__` is the root package's own __init__.py (only __version__). A new
# subpackage or top-level module has to be given a floor here before the tests pass.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "app", "napari"),
    ("evaluation",),
    ("interactive",),
    ("inference", "tasks"),
    ("pretrain", "engine"),
    ("models", "losses", "text"),
    ("data",),
    ("io", "intensity", "metrics", "segment"),
    ("config", "utils", "errors", "__init__"),
)
FLOOR = {name: len(LAYERS) - i for i, row in enumerate(LAYERS) for name in row}  # 1 = the bottom floor
NO_TORCH_AT_TOP = ("io", "intensity", "metrics", "segment")
HEAVY = ("torch", "monai")

_MODULE_STRING = re.compile(r"^[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)+(:[A-Za-z_]\w*)?$")


@dataclass(frozen=True)
class Import:
    path: Path  # the importing file
    line: int
    source: str  # the importing module, dotted ("fmscope.io.registry"; a package is named by its __init__)
    target: str  # the imported module (internal) or the top-level name of an external one ("torch")
    kind: str  # "top", "lazy", "type-only", "import_module" or "string"

    @property
    def internal(self) -> bool:
        return self.target.split(".")[0] == self.source.split(".")[0]


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``package`` (a package is named by its __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def part(module: str) -> str:
    """The subpackage or top-level module a dotted name belongs to (``__init__`` for the root package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, path: Path, is_package: bool, known: set[str]) -> None:
        self.name, self.path, self.known = name, path, known
        self.package = name if is_package else name.rpartition(".")[0]
        self.root = name.split(".")[0]
        self.context = ["top"]
        self.found: list[Import] = []
        self.seen_calls: set[int] = set()  # constants already counted as an import_module argument

    def add(self, node: ast.AST, target: str, kind: str | None = None) -> None:
        self.found.append(Import(self.path, getattr(node, "lineno", 0), self.name, target, kind or self.context[-1]))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.context.append("lazy" if self.context[-1] == "top" else self.context[-1])
        self.generic_visit(node)
        self.context.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.context.append("type-only")
        for stmt in node.body:
            self.visit(stmt)
        self.context.pop()
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, alias.name if alias.name.split(".")[0] == self.root else alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module.split(".")[0] != self.root:
            self.add(node, module.split(".")[0])
            return
        for alias in node.names:  # `from fmscope import errors` imports the module fmscope.errors
            sub = f"{module}.{alias.name}"
            self.add(node, sub if sub in self.known else module)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self.seen_calls.add(id(arg))
                if arg.value.split(".")[0] == self.root:
                    self.add(node, arg.value, "import_module")
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                self.seen_calls.add(id(arg.values[0]))
                prefix = str(arg.values[0].value).split(".")
                if prefix[0] == self.root and len(prefix) > 2:  # f"fmscope.sub.{x}": the subpackage is known
                    self.add(node, ".".join(prefix[:2]), "import_module")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, str) and id(node) not in self.seen_calls and _MODULE_STRING.match(value):
            module = value.partition(":")[0]
            if module.split(".")[0] == self.root and module in self.known:
                self.add(node, module, "string")


def collect_imports(package: Path) -> list[Import]:
    """Every import (internal and external) of every module under ``package``."""
    known = modules(package)
    found: list[Import] = []
    for name, path in known.items():
        collector = _Collector(name, path, path.name == "__init__.py", set(known))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += collector.found
    return found


def _show(imp: Import) -> str:
    path = imp.path.relative_to(ROOT) if imp.path.is_relative_to(ROOT) else imp.path
    return f"{path}:{imp.line}: {imp.source} -> {imp.target} ({imp.kind})"


def _floor(name: str) -> str:
    return f"floor {FLOOR[name]} ({', '.join(LAYERS[len(LAYERS) - FLOOR[name]])})"


def unplaced(package: Path) -> list[str]:
    """Subpackages and top-level modules with no floor in LAYERS."""
    return sorted({f"{part(m)} ({path})" for m, path in modules(package).items() if part(m) not in FLOOR})


def layer_violations(imports: list[Import]) -> list[str]:
    """Every internal import from a lower floor into a higher one."""
    bad = []
    for imp in imports:
        src, dst = part(imp.source), part(imp.target)
        if imp.internal and src in FLOOR and dst in FLOOR and FLOOR[dst] > FLOOR[src]:
            bad.append(f"{_show(imp)}: {src} on {_floor(src)} imports {dst} on {_floor(dst)}")
    return bad


def package_cycles(imports: list[Import]) -> list[str]:
    """The cycles between subpackages (each strongly connected group of two or more), with the imports forming them."""
    edges: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        src, dst = part(imp.source), part(imp.target)
        if imp.internal and src != dst:
            edges.setdefault(src, {}).setdefault(dst, []).append(imp)
    nodes = sorted(set(edges) | {d for out in edges.values() for d in out})

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {n: reach(n) for n in nodes}
    groups = {frozenset(m for m in nodes if m in reachable[n] and n in reachable[m]) | {n} for n in nodes}
    report = []
    for group in sorted((g for g in groups if len(g) > 1), key=sorted):
        lines = [f"cycle between {', '.join(sorted(group))}:"]
        for src in sorted(group):
            for dst, imps in sorted(edges.get(src, {}).items()):
                if dst in group:
                    lines += [f"  {_show(imp)}" for imp in imps]
        report.append("\n".join(lines))
    return report


def heavy_at_top(package: Path, imports: list[Import], parts: tuple[str, ...] = NO_TORCH_AT_TOP) -> list[str]:
    """Modules of ``parts`` that import torch or monai when imported: directly at module top, or through the
    module-top imports of other fmscope modules (parent packages' __init__ included)."""
    known = modules(package)
    top: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.kind == "top":
            top.setdefault(imp.source, []).append(imp)

    def executed(module: str) -> list[str]:  # importing a.b.c runs a, a.b and a.b.c
        pieces = module.split(".")
        return [m for m in (".".join(pieces[: i + 1]) for i in range(len(pieces))) if m in known]

    bad = []
    for name in known:
        if part(name) not in parts:
            continue
        chain: dict[str, str | None] = dict.fromkeys(executed(name))
        todo = list(chain)
        while todo:
            module = todo.pop()
            for imp in top.get(module, []):
                if imp.target in HEAVY:
                    via, hops = module, []
                    while via is not None:
                        hops.append(via)
                        via = chain[via]
                    path = " <- ".join(hops)
                    bad.append(f"{name} imports {imp.target} at module top: {_show(imp)} (imported by {path})")
                elif imp.internal:
                    for nxt in executed(imp.target):
                        if nxt not in chain:
                            chain[nxt] = module
                            todo.append(nxt)
    return sorted(set(bad))


def check(package: Path) -> list[str]:
    """Every problem: unplaced subpackages, upward imports, cycles, torch/monai at module top of the numpy floors."""
    imports = collect_imports(package)
    problems = [f"no floor in LAYERS: {u}" for u in unplaced(package)]
    return problems + layer_violations(imports) + package_cycles(imports) + heavy_at_top(package, imports)


# ---------------------------------------------------------------- the real tree
@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect_imports(PACKAGE)


def test_every_subpackage_has_a_floor() -> None:
    assert not unplaced(PACKAGE), "give these a floor in LAYERS (and in DESIGN.md):\n" + "\n".join(unplaced(PACKAGE))


def test_no_import_goes_up_a_floor(imports: list[Import]) -> None:
    bad = layer_violations(imports)
    assert not bad, f"{len(bad)} import(s) from a lower floor into a higher one (DESIGN.md, Layers):\n" + "\n".join(bad)


def test_no_cycles_between_subpackages(imports: list[Import]) -> None:
    cycles = package_cycles(imports)
    assert not cycles, "\n".join(cycles)


def test_numpy_floors_import_no_torch_at_module_top(imports: list[Import]) -> None:
    bad = heavy_at_top(PACKAGE, imports)
    assert not bad, "\n".join(bad)


def test_the_checker_sees_the_tree(imports: list[Import]) -> None:
    """A checker that parsed nothing would pass: the tree has hundreds of internal imports of every kind."""
    internal = [i for i in imports if i.internal]
    assert len(internal) > 300 and len(modules(PACKAGE)) > 100
    kinds = {i.kind for i in internal}
    assert {"top", "lazy", "type-only"} <= kinds, kinds
    assert {part(i.target) for i in internal} >= {"cli", "tasks", "io", "errors"}  # targets are resolved


# ---------------------------------------------------------------- the checker on a fake tree
BASE = {
    "__init__.py": "",
    "errors.py": "class InvalidInputError(ValueError): ...\n",
    "utils/__init__.py": "from fmscope.errors import InvalidInputError\n",
    "utils/device.py": "import torch\n",
    "io/__init__.py": "from fmscope.io.x import read\n",
    "io/x.py": "from fmscope.errors import InvalidInputError\n\n\ndef read():\n    return InvalidInputError\n",
    "tasks/__init__.py": "",
    "tasks/finetune.py": "from fmscope.io import read\nfrom . import registry\n",
    "tasks/registry.py": "TASKS = {'segment': 'fmscope.tasks.finetune:finetune'}\n",
}

INJECTED = [
    # (file, its new source, fragments of the problem reported)
    ("io/x.py", "def f():\n    from fmscope.tasks import finetune\n",
     ["fmscope/io/x.py:2", "-> fmscope.tasks.finetune (lazy)", "floor 6 (inference, tasks)"]),
    ("io/x.py", "import fmscope.tasks.finetune\n",
     ["fmscope/io/x.py:1", "fmscope.tasks.finetune (top)", "io on floor 2 (io, intensity, metrics, segment)"]),
    ("io/x.py", "from ..tasks import finetune\n", ["fmscope/io/x.py:1", "-> fmscope.tasks.finetune (top)"]),
    ("io/x.py", "from fmscope import tasks\n", ["-> fmscope.tasks (top)"]),
    ("io/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fmscope.tasks import finetune\n",
     ["fmscope/io/x.py:3", "(type-only)"]),
    ("io/x.py", "import importlib\n\n\ndef f():\n    return importlib.import_module('fmscope.tasks.finetune')\n",
     ["fmscope/io/x.py:5", "(import_module)"]),
    ("io/x.py", "import importlib\n\n\ndef f(n):\n    return importlib.import_module(f'fmscope.tasks.{n}')\n",
     ["-> fmscope.tasks (import_module)"]),
    ("io/x.py", "READERS = {'tif': 'fmscope.tasks.finetune:finetune'}\n", ["fmscope/io/x.py:1", "(string)"]),
    ("errors.py", "from fmscope.utils import device\n", ["cycle between errors, utils"]),  # sideways, but a cycle
    ("utils/__init__.py", "from fmscope.io import read\n", ["utils on floor 1 (config, utils, errors, __init__)"]),
    ("io/x.py", "import torch\n", ["fmscope.io.x imports torch at module top"]),
    ("io/x.py", "import monai.networks\n", ["imports monai at module top"]),
    ("io/x.py", "from fmscope.utils.device import cuda\n",
     ["fmscope.io.x imports torch", "utils/device.py:1", "fmscope.utils.device <- fmscope.io.x"]),
    ("napkin/__init__.py", "", ["no floor in LAYERS: napkin"]),
]  # fmt: skip


def _tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "fmscope"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(textwrap.dedent(text))
    return package


def test_the_fake_tree_is_clean(tmp_path: Path) -> None:
    package = _tree(tmp_path, BASE)
    assert check(package) == []
    kinds = {(i.source, i.target, i.kind) for i in collect_imports(package)}
    assert ("fmscope.tasks.finetune", "fmscope.tasks.registry", "top") in kinds  # `from . import registry`
    assert ("fmscope.tasks.registry", "fmscope.tasks.finetune", "string") in kinds
    assert ("fmscope.utils.device", "torch", "top") in kinds


@pytest.mark.parametrize(("file", "source", "expected"), INJECTED)
def test_an_injected_import_is_reported(tmp_path: Path, file: str, source: str, expected: list[str]) -> None:
    problems = check(_tree(tmp_path, {**BASE, file: source}))
    text = "\n".join(problems)
    assert problems and all(fragment in text for fragment in expected), text
