"""``fmscope app``: start the no-code web app on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fmscope.errors import InvalidInputError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "app",
        help="the no-code web app: open a raw stack, click objects, propagate, correct, export (local web page)",
        description="Start the local web app. It lists and opens images inside the data folder only, keeps every "
        "session on disk at each change (reload or restart restores it, undo history included) and listens on "
        "127.0.0.1 unless told otherwise. Needs the app extra: pip install -c constraints.txt -e '.[app]'.",
    )
    p.add_argument("path", nargs="?", type=Path, default=None, help="an image or folder to open (inside the data root)")
    p.add_argument("--data-root", type=Path, default=None, help="the folder the page may read (default: PATH's folder, "
                   "or the current folder)")  # fmt: skip
    p.add_argument("--sessions", type=Path, default=None, help="where sessions and exports are written (default "
                   "$FMSCOPE_SESSIONS or ~/.local/share/fmscope/sessions)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--max-upload", default="2G", help="largest upload accepted (default 2G)")
    p.add_argument("--checkpoints", type=Path, default=None, help="folder of SAM/SAM2 checkpoints (default "
                   "$FMSCOPE_CACHE)")  # fmt: skip
    p.add_argument("--grounding", type=Path, default=None, help="local Grounding DINO folder for text prompts")
    p.add_argument("--allow-host", action="append", default=[], help="another Host name the page is reached by")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    from fmscope.app import AppConfig, default_sessions_dir, parse_size, serve
    from fmscope.interactive.checkpoints import cache_dir

    path = args.path.resolve() if args.path is not None else None
    root = args.data_root or (path.parent if path is not None and not path.is_dir() else path) or Path.cwd()
    open_path = None
    if path is not None:
        if not path.exists():
            raise InvalidInputError(f"path: '{args.path}' does not exist")
        try:
            open_path = path.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            raise InvalidInputError(f"path: '{args.path}' is not inside the data root '{root}'") from None
    config = AppConfig(
        data_root=Path(root), sessions=args.sessions or default_sessions_dir(), host=args.host, port=args.port,
        max_upload=parse_size(args.max_upload), open_path=open_path, cache_dir=args.checkpoints or cache_dir(),
        grounding=args.grounding, allowed_hosts=tuple(args.allow_host),
    )  # fmt: skip
    from fmscope.app.server import app_url

    print(f"fmscope app: {app_url(config)} (data: {config.data_root}; sessions: {config.sessions}; Ctrl+C stops it)",
          flush=True)  # fmt: skip
    serve(config, open_browser=args.open)
    return 0
