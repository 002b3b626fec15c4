"""Model listing command: ``fmscope models [--json]``: the known SAM/SAM2 checkpoints and whether they are in the cache.

fmscope never downloads weights; this command says which file to fetch from where and where to put it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fmscope.interactive.checkpoints import cache_dir, checkpoint_rows


def format_table(rows: list[dict[str, Any]], folder: Path) -> str:
    """The rows as a text table, followed by the cache folder and the download URLs."""
    header = ("name", "family", "file", "size MB", "sha256", "present")
    cells = [
        (
            r["name"],
            r["family"],
            r["file_name"],
            "unknown" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
            r["sha256"] or "unknown",
            r["present"],
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(str(c[i]).ljust(widths[i]) for i in range(len(header))).rstrip() for c in (header, *cells)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        f"cache folder: {folder} (set FMSCOPE_CACHE to change it; put the files there under the names above)",
        "fmscope never downloads weights; fetch them by hand:",
    ]
    lines += [f"  {r['name']}: {r['url']}" for r in rows]
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="list the known SAM/SAM2 checkpoints, where to download them and whether they are in the cache",
        description="List the SAM (vit_b/l/h) and SAM 2.1 (hiera tiny/small/base_plus/large) checkpoints fmscope "
        "knows: file name, size, SHA-256, whether the file is in the cache folder ($FMSCOPE_CACHE, default "
        "~/.cache/fmscope) and the official URL to fetch it from by hand. Nothing is downloaded.",
    )
    p.add_argument("--json", action="store_true", help="print the same information as JSON")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    folder = cache_dir()
    rows = checkpoint_rows(folder)
    if args.json:
        print(json.dumps({"cache_dir": str(folder), "models": rows}, indent=1))
    else:
        print(format_table(rows, folder))
    return 0
