"""Entry point of the ``fmscope`` command: argument parsing, logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fmscope import __version__
from fmscope.cli import (
    app_commands,
    bench_commands,
    data_commands,
    interactive_commands,
    model_commands,
    pretrain_commands,
    seg_commands,
    task_commands,
)
from fmscope.errors import FmscopeError
from fmscope.utils.logging import configure_logging

logger = logging.getLogger("fmscope.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmscope",
        description="Foundation models for raw scientific images: read, adapt, segment and evaluate volumes.",
    )
    parser.add_argument("--version", action="version", version=f"fmscope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_commands.register(sub)
    seg_commands.register(sub)
    task_commands.register(sub)
    pretrain_commands.register(sub)
    bench_commands.register(sub)
    interactive_commands.register(sub)
    model_commands.register(sub)
    app_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 1 bad input or failure, 2 usage error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options even after an earlier positional (``finetune seg --out D epochs=5``)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except (FmscopeError, OSError, ValueError) as exc:
        # Bad input: one line naming the file and the problem, never a traceback (-vv shows it).
        logger.debug("traceback", exc_info=True)
        print(f"fmscope {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fmscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line, with a pointer to the traceback
        logger.debug("traceback", exc_info=True)
        print(
            f"fmscope {args.command}: internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
