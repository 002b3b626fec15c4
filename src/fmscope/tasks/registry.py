"""The registered tasks by name: one module per task, imported on first use (the CLI lists names without torch).

A task is an object implementing :class:`fmscope.tasks.base.Task`. Adding one is one module that defines it and one
line here (or :func:`register_task` at run time, e.g. in a plug-in or a test).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from fmscope.errors import InvalidInputError

if TYPE_CHECKING:
    from fmscope.tasks.base import Task

T = TypeVar("T", bound="Task")

#: name -> (short CLI name, "module:attribute" of the task object)
BUILTIN: dict[str, tuple[str, str]] = {
    "segment": ("seg", "fmscope.tasks.segment:SEGMENT"),
    "classify": ("cls", "fmscope.tasks.classify:CLASSIFY"),
    "deblur": ("deblur", "fmscope.tasks.deblur:DEBLUR"),
}
_LOADED: dict[str, Task] = {}
_ADDED: dict[str, str] = {}  # run-time registrations: name -> short name


def task_names() -> tuple[str, ...]:
    """The registered task names, built-in ones first."""
    return (*BUILTIN, *_ADDED)


def short_names() -> dict[str, str]:
    """Short (CLI) name -> task name, e.g. ``{'seg': 'segment', ...}``."""
    return {**{short: name for name, (short, _) in BUILTIN.items()}, **{s: n for n, s in _ADDED.items()}}


def check_task_name(name: object, what: str = "task") -> str:
    """``name`` when it is a registered task; else an error naming ``what`` and listing the registered tasks."""
    if not isinstance(name, str) or name not in task_names():
        raise InvalidInputError(f"{what}: unknown task {name!r}; registered tasks: {list(task_names())}")
    return name


def get_task(name: str) -> Task:
    """The task object registered as ``name`` (an error lists the registered tasks)."""
    check_task_name(name)
    if name not in _LOADED:
        module, _, attribute = BUILTIN[name][1].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), attribute)
    return _LOADED[name]


def register_task(task: T, *, short: str | None = None, replace: bool = False) -> T:
    """Register ``task`` under ``task.name`` (and ``short`` for the CLI, default the name); returns it."""
    name = task.name
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInputError(f"task.name: expected an identifier, got {name!r}")
    if name in task_names() and not replace:
        raise InvalidInputError(f"task.name: {name!r} is already registered (replace=True to override)")
    if name in BUILTIN:
        raise InvalidInputError(f"task.name: {name!r} is a built-in task and cannot be replaced")
    _ADDED[name] = short or name
    _LOADED[name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task added by :func:`register_task` (built-in tasks stay)."""
    if name in BUILTIN:
        raise InvalidInputError(f"name: {name!r} is a built-in task and cannot be removed")
    _ADDED.pop(name, None)
    _LOADED.pop(name, None)
