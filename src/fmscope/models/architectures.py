"""Backbone architectures by name: what one architecture knows, behind one adapter, registered in one place.

An architecture is one module (``models/unet.py``, ``models/swinunetr.py``) holding an :class:`Architecture` subclass:
the checks of its config fields, its size multiple (``divisor``), the spatial dims it allows, how its MONAI network is
built, how the encoder levels and the dense output are computed from that network's own sub-modules, the channels of
each encoder level, the state-dict prefixes of its encoder, and its default segmentation loss. The module registers
one instance with :func:`register_architecture`; :class:`~fmscope.models.BackboneConfig` and
:class:`~fmscope.models.Backbone` only dispatch through :func:`get_architecture`.

Adding a backbone: a new ``models/<name>.py`` ending in ``register_architecture("<name>", <Adapter>())`` and its module
name in :data:`BUILTIN_MODULES` (loaded on the first lookup); or, outside fmscope, import a module that registers
itself. Fields beyond those of :class:`~fmscope.models.BackboneConfig` come with a frozen-dataclass subclass of it named
by :attr:`Architecture.config_class`; ``BackboneConfig.from_dict`` picks that class by the ``architecture`` key.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from fmscope.errors import InvalidInputError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from fmscope.models.config import BackboneConfig

#: the modules of the architectures shipped with fmscope; each registers itself when imported.
BUILTIN_MODULES: tuple[str, ...] = ("fmscope.models.unet", "fmscope.models.swinunetr")

_ARCHITECTURES: dict[str, Architecture] = {}
_builtins_loaded = False


class Architecture(ABC):
    """One backbone architecture: config checks, network construction and the walk of its sub-modules.

    ``encode`` and ``decode`` together must compute exactly what the network's own ``forward`` does (a test checks
    ``Backbone(x).dense == Backbone.net(x)`` bit for bit), so weights trained either way are interchangeable.

    Attributes:
        allowed_dims: the ``spatial_dims`` the architecture supports.
        default_seg_loss: the segmentation loss fine-tuning uses when none is chosen (``'dicefocal'``, ``'dicece'``).
        config_class: the config dataclass of this architecture, when it has fields beyond
            :class:`~fmscope.models.BackboneConfig` (a subclass of it); ``None`` = ``BackboneConfig`` itself.
        fields: the :class:`~fmscope.models.BackboneConfig` fields this architecture reads besides the common ones
            (documentation; the others are ignored).
    """

    allowed_dims: ClassVar[tuple[int, ...]] = (3,)
    default_seg_loss: ClassVar[str] = "dicece"
    config_class: ClassVar[type[BackboneConfig] | None] = None
    fields: ClassVar[tuple[str, ...]] = ()

    def check(self, config: BackboneConfig) -> None:  # noqa: B027 (optional hook: nothing to check by default)
        """Raise :class:`InvalidInputError` (naming the field) when an architecture-specific field is invalid."""

    @abstractmethod
    def divisor(self, config: BackboneConfig) -> int:
        """Every spatial size of the input must be a multiple of this (the total downsampling factor)."""

    @abstractmethod
    def feature_dims(self, config: BackboneConfig) -> tuple[int, ...]:
        """Channels of each encoder level, shallow to deep (the last is the bottleneck)."""

    @abstractmethod
    def build(self, config: BackboneConfig) -> nn.Module:
        """The (randomly initialised) network; its state-dict names become the backbone's, prefixed by ``net.``."""

    @abstractmethod
    def encoder_prefixes(self, net: nn.Module) -> tuple[str, ...]:
        """State-dict name prefixes (relative to ``net``, each ending in ``.``) of the encoder's tensors."""

    @abstractmethod
    def encode(self, net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
        """Encoder features of ``x``, shallow to deep; the last is the bottleneck."""

    @abstractmethod
    def decode(self, net: nn.Module, features: tuple[Tensor, ...]) -> Tensor:
        """The dense, full-resolution output from the encoder features (what ``net(x)`` returns)."""


def register_architecture(name: str, adapter: Architecture, *, overwrite: bool = False) -> None:
    """Register ``adapter`` under ``name`` (the ``architecture`` of a config); an existing name raises unless
    ``overwrite``."""
    add_to_registry(
        _ARCHITECTURES, "architecture", name, adapter, ("adapter", Architecture, "an Architecture"), overwrite
    )


def add_to_registry(
    table: dict[str, Any], kind: str, name: str, value: Any, expected: tuple[str, type, str], overwrite: bool
) -> None:
    """``table[name] = value`` after the checks every registry makes: ``name`` a non-empty string, ``value`` of the
    type in ``expected`` (parameter name, type, how it is called), and no existing entry unless ``overwrite``."""
    param, cls, called = expected
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"name: expected a non-empty string, got {name!r}")
    if not isinstance(value, cls):
        raise InvalidInputError(f"{param}: expected {called}, got {type(value).__name__}")
    if name in table and not overwrite:
        raise InvalidInputError(f"name: {kind} '{name}' is already registered; pass overwrite=True to replace it")
    table[name] = value


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def list_architectures() -> list[str]:
    """Registered architecture names, sorted."""
    _load_builtins()
    return sorted(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The adapter registered as ``name``; an unknown name raises, listing the registered ones."""
    _load_builtins()
    if not isinstance(name, str) or name not in _ARCHITECTURES:
        raise InvalidInputError(f"architecture: expected one of {sorted(_ARCHITECTURES)}, got {name!r}")
    return _ARCHITECTURES[name]
