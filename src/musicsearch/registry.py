"""A small string-keyed registry: everything swappable is chosen by name.

Example:
    >>> LOSSES: Registry[type] = Registry("loss")
    >>> @LOSSES.register("contrastive")
    ... class ContrastiveLoss: ...
    >>> LOSSES.get("contrastive")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from musicsearch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories, configs) of one kind.

    Args:
        kind: what the registry holds, used in error messages ("model", "loss", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``.

        Raises:
            ConfigError: if the name is already taken.
        """
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            ConfigError: naming the unknown key and listing the known ones.
        """
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
