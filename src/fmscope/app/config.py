"""Settings of ``fmscope app``: where data are read from, where sessions and exports are written, how it listens."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fmscope.errors import InvalidInputError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``'500M'``, ``'2G'``, ``'1.5GiB'`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise InvalidInputError(f"max_upload: expected a size such as 500M or 2G, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 1:
        raise InvalidInputError(f"max_upload: expected a positive size, got {text!r}")
    return value


@dataclass(frozen=True)
class AppConfig:
    """Where the app reads and writes, and how it listens.

    Attributes:
        data_root: the only folder whose files the page can list and open (read-only).
        sessions: where sessions, uploads and exports are written (one sub-folder per browser).
        host, port: the address to listen on; anything but a local address is warned about.
        max_upload: the largest upload accepted, in bytes.
        open_path: a file or folder inside ``data_root`` to open at start (the page offers it first).
        cache_dir: where SAM/SAM2 checkpoints are looked for (default ``$FMSCOPE_CACHE``).
        grounding: a local Grounding DINO folder for text prompts (None: text prompts are unavailable).
    """

    data_root: Path
    sessions: Path
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload: int = 2 * 2**30
    open_path: str | None = None
    cache_dir: Path | None = None
    grounding: Path | None = None
    allowed_hosts: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        root = Path(self.data_root).expanduser()
        if not root.is_dir():
            raise InvalidInputError(f"data_root: '{root}' is not a folder")
        object.__setattr__(self, "data_root", root.resolve())
        sessions = Path(self.sessions).expanduser()
        sessions.mkdir(parents=True, exist_ok=True)
        object.__setattr__(self, "sessions", sessions.resolve())
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise InvalidInputError(f"port: expected 1..65535 (the page checks the port it is reached on), got "
                                    f"{self.port!r}")  # fmt: skip
        if self.grounding is not None and not Path(self.grounding).is_dir():
            raise InvalidInputError(f"grounding: '{self.grounding}' is not a folder")

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def host_names(self, port: int) -> set[str]:
        """The ``Host`` headers a request may carry (anything else is refused: DNS rebinding)."""
        hosts = {"127.0.0.1", "localhost", "[::1]", *self.allowed_hosts}
        if not self.is_local:
            hosts.add(f"[{self.host}]" if ":" in self.host else self.host)
        names = {f"{h}:{port}" for h in hosts}
        if port == 80:  # browsers leave the default port out of Host
            names |= hosts
        return names | set(self.allowed_hosts)


def default_sessions_dir() -> Path:
    """``$FMSCOPE_SESSIONS`` or ``~/.local/share/fmscope/sessions``."""
    env = os.environ.get("FMSCOPE_SESSIONS")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "fmscope" / "sessions"
