"""Run the README's console examples and compare their output with what the README shows.

    python benchmarks/readme_tour.py                       # the "A quick tour of the CLI" section
    python benchmarks/readme_tour.py --section "Few-shot fine-tuning and prediction" --keep /tmp/tour

Every ``$ ...`` line of the section's ``console`` blocks (``fmscope`` commands, and shell lines such as ``echo ... >
prompts.json`` or ``head``; ``\\`` continuations; a trailing ``# comment`` dropped; a synopsis with placeholder paths is
a ``text`` block) runs in a fresh working folder, in the order written, with ``../shared/data`` pointing at the shared
data. Lines shown under a command are its expected output: a command whose README output shows ``error:`` must fail
with exit code 1, any other must succeed; the output must equal the README's, word by word (the README wraps long
lines by hand; trailing ``# comments`` dropped, durations such as ``60.9 s`` may differ); a command marked
``(excerpt`` is checked for its exit code only. Commands with placeholders (``...``, `` [--``, ``my_``) are listed as
skipped. Prints one table row per command; exits 1 when any row fails, so the tour cannot go stale
(``tests/test_readme_tour.py`` runs it on the quick tour).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PLACEHOLDERS = ("...", " [--", "my_", "big_volume", "volume.tif")


@dataclass
class Example:
    command: str
    expected: list[str]
    excerpt: bool


def section_text(readme: str, title: str) -> str:
    """The text of the ``## title`` section (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", readme + "\n## ", flags=re.S | re.M)
    if match is None:
        raise SystemExit(f"--section: no section '## {title}' in README.md")
    return match.group(1)


def _uncomment(line: str) -> str:
    """A line without its trailing ``# comment`` (two spaces or more before ``#``)."""
    return re.split(r"\s{2,}#", line, maxsplit=1)[0].rstrip()


def examples(text: str) -> list[Example]:
    """The ``$ fmscope`` commands of the section's console blocks with the output lines shown under them."""
    out: list[Example] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.startswith("$ "):
                i += 1
                continue
            parts = [line[2:]]
            while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                parts[-1] = parts[-1].rstrip()[:-1]
                i += 1
                parts.append(lines[i])
            raw = " ".join(p.strip() for p in parts)
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                if lines[i].strip():
                    expected.append(_uncomment(lines[i]))
                i += 1
            out.append(Example(_uncomment(raw), expected, "(excerpt" in raw))
    return out


def run_example(example: Example, cwd: Path) -> tuple[str, str, float]:
    """(status, detail, seconds) of one example run in ``cwd``."""
    command = example.command.replace("../shared/data", str(DATA))
    if any(p in example.command for p in PLACEHOLDERS):
        return "skipped", "placeholder", 0.0
    t0 = time.perf_counter()
    if command.startswith("fmscope "):
        argv = [sys.executable, "-m", "fmscope.cli.main", *shlex.split(command)[1:]]
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=3600)
    else:  # a shell line of the tour (writing a prompts file, looking at a CSV)
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    wants_error = any("error:" in e for e in example.expected)
    if proc.returncode != (1 if wants_error else 0):
        return "FAILED", f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-200:]}", seconds
    if example.excerpt or not example.expected:
        return "ok", "exit code only" if example.expected else "", seconds
    text = (proc.stdout + proc.stderr).replace(str(DATA), "../shared/data").replace(str(Path.home()), "~")
    got = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip() and not _progress(line)]
    # compared word by word: the README wraps long lines by hand
    want, have = _timeless(" ".join(example.expected)).split(), _timeless(" ".join(got)).split()
    if have[: len(want)] != want:
        k = next(i for i, w in enumerate(want) if i >= len(have) or have[i] != w)
        return (
            "DIFFERS",
            f"word {k + 1}: README '{' '.join(want[k : k + 8])}' | now '{' '.join(have[k : k + 8])}'",
            seconds,
        )
    return "ok", "output as in the README", seconds


def _timeless(line: str) -> str:
    """A line with its durations (``60.9 s``) masked: they vary from run to run."""
    return re.sub(r"\b\d+(\.\d+)? s\b", "<t> s", line)


def _progress(line: str) -> bool:
    """tqdm bars and log lines are not part of a command's printed result."""
    return bool(re.match(r"^(WARNING|INFO|DEBUG) ", line)) or "it/s]" in line or "s/it]" in line or "?it/s" in line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", action="append", default=None, help="README section title (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, help="working folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"the shared data folder {DATA} is absent: nothing to run")
        return 0
    readme = (ROOT / "README.md").read_text()
    titles = args.section or ["A quick tour of the CLI (real outputs)"]
    work = args.keep or Path(tempfile.mkdtemp(prefix="fmscope_tour_"))
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    print("| status | s | command | detail |\n|---|---:|---|---|")
    for title in titles:
        for example in examples(section_text(readme, title)):
            status, detail, seconds = run_example(example, work)
            failed += status in ("FAILED", "DIFFERS")
            print(f"| {status} | {seconds:.1f} | `{example.command[:90]}` | {detail} |", flush=True)
    print(f"\n{failed} failed; working folder {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
