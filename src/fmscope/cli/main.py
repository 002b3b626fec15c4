"""Entry point of the ``fmscope`` command: argument parsing, logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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
from fmscope.errors import FmscopeError, Interrupted, Terminated
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
        with sigterm_as_interrupt():
            code: int = args.func(args)
        return code
    except (FmscopeError, OSError, ValueError) as exc:
        # Bad input: one line naming the file and the problem, never a traceback (-vv shows it).
        logger.debug("traceback", exc_info=True)
        print(f"fmscope {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        # Ctrl-C and a scheduler's SIGTERM alike: temporary outputs were removed on the way out, checkpoints kept.
        terminated = isinstance(exc, Terminated) or (isinstance(exc, Interrupted) and exc.terminated)
        hint = exc.hint if isinstance(exc, Interrupted) else ""
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"fmscope {args.command}: {how}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:  # an unexpected failure: still one line, with a pointer to the traceback
        logger.debug("traceback", exc_info=True)
        print(
            f"fmscope {args.command}: internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread while the command runs (the old handler after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
