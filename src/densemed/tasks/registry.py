"""The task registry: ``@register`` on a :class:`~densemed.tasks.base.Task` subclass, ``build(cfg)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from densemed.registry import Registry

if TYPE_CHECKING:
    from densemed.config import Config
    from densemed.tasks.base import Task

_REGISTRY: Registry[type] = Registry("task", "task.name")
#: older names still read from recipes and checkpoints
ALIASES = {"sr": "image"}


def register(cls: type) -> type:
    """Class decorator: register a task under its ``name``."""
    _REGISTRY.add(cls.name, cls)
    return cls


def names() -> list[str]:
    """Sorted names of every registered task."""
    return _REGISTRY.names()


def get(name: str) -> type:
    """The task class ``name`` (aliases allowed); an unknown name lists the available ones."""
    return _REGISTRY.get(ALIASES.get(name, name))


def build(cfg: Config, source: str = "recipe") -> Task:
    """The recipe's task object (its options typed and checked)."""
    return get(cfg.task_name)(cfg, source)


def check(cfg: Config, source: str = "recipe") -> None:
    """Validate ``cfg.task`` (name and options) without keeping the object."""
    build(cfg, source)
