"""Name -> class/builder registries shared by the whole library.

Every pluggable piece (routers, datasets, backbones) registers itself under a lowercase
name (algorithms are declared instead: :mod:`moebench.declare`). Duplicates raise; an unknown name raises with the list of valid names, so a
typo in params is reported in one line before any job starts.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from moebench.errors import MoebenchError

T = TypeVar("T")


class UnknownNameError(MoebenchError, KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from lowercase names to classes or builders of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ROUTERS.register("topk")``."""
        if name != name.lower() or not name:
            raise ValueError(f"{self.kind} names must be non-empty lowercase, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


ROUTERS: Registry = Registry("router")
DATASETS: Registry = Registry("dataset")
BACKBONES: Registry = Registry("backbone")
