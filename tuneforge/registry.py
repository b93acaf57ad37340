"""One tiny registry, used for models, strategies and recipes (timm-style `register`/`create`)."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, flag: str):
        self.kind = kind
        self.flag = flag  # named in errors, so the user knows which setting to fix
        self._items: dict[str, Callable[..., T]] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            self._docs[name] = doc or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
            return fn
        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            raise ConfigError(f"{self.flag}: unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}")
        return self._items[name]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def doc(self, name: str) -> str:
        return self._docs.get(name, "")

    def __contains__(self, name: str) -> bool:
        return name in self._items
