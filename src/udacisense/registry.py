"""One registry shape for everything chosen by name: models, data sources, stages and export formats.

Shaped like timm's model registry: a name maps to one entry, registered once (``register`` or the
``@registry.register(name)`` decorator); ``get`` returns it or raises one line that suggests the closest
known name (:func:`did_you_mean`, the one such hint in the toolkit); ``names`` lists what is registered,
in registration order.
"""

from __future__ import annotations

import difflib
from collections.abc import ItemsView, Iterable, Iterator, ValuesView
from typing import Any, Callable, Generic, TypeVar, overload

from udacisense.errors import UdaciSenseError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"did you mean 'x'?" for the closest of ``known``, else the list of them."""
    known = list(known)
    guess = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(known)}"


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is how errors call them: "model", "stage", ...). ``in``, ``[name]``, iteration,
    ``items()`` and ``values()`` read it like a dict; ``get`` is the lookup that explains a miss."""

    def __init__(self, kind: str, other_names: str = "") -> None:
        self.kind = kind
        self.other_names = other_names  # what else a name may be (a user's model file), said when a name is unknown
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Add ``entry`` under ``name`` (or, without ``entry``, a decorator that adds what it decorates); a name
        registered twice is a bug, raised at import."""

        def add(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = item
            return item

        return add if entry is None else add(entry)

    def get(self, name: str, where: str = "") -> T:
        """The entry ``name``; an unknown name raises one line naming ``where`` it came from and the closest known name."""
        if name not in self._entries:
            origin = f"{where}: " if where else ""
            alternatives = f"; {self.other_names}" if self.other_names else ""
            raise UdaciSenseError(f"{origin}unknown {self.kind} '{name}' ({did_you_mean(name, self._entries)}{alternatives})")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def items(self) -> ItemsView[str, T]:
        return self._entries.items()

    def values(self) -> ValuesView[T]:
        return self._entries.values()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
