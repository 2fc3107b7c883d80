"""One small name → object registry behind every pluggable piece (operators, spaces, KD losses, datasets,
baseline families): registering a taken name raises, looking up an unknown one is a one-line error that lists
the known names, and tests parametrise over :meth:`Registry.names` so a new entry is tested once registered."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from nas.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping name → object, filled by :meth:`register` (a decorator) or :meth:`add`."""

    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "dataset", "KD loss", ...
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register `obj` under `name`; a name already taken raises ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@REGISTRY.register("name")`` above a class or factory."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown {self.kind} {name!r} (known: {', '.join(self._items) or 'none'})"
            ) from None

    def __contains__(self, name: object) -> bool:  # Mapping's would call __getitem__, which raises on a miss
        try:
            return name in self._items
        except TypeError:  # unhashable
            return False

    def get(self, name: str, default: T | None = None) -> T | None:  # likewise
        try:
            return self._items.get(name, default)
        except TypeError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
