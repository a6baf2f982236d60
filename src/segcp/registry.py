"""Classes known by name: the one registry behind the set families (``segcp.methods``) and the
losses (``segcp.losses``).

A name may point to a module imported on first use, so that start-up stays cheap
(``calibrate --method threshold`` never imports scipy.ndimage, the encoders or torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from segcp.errors import SegcpError

__all__ = ["Registry", "lazy_attributes", "lazy_classes"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes (each with a ``name`` attribute) known by name; ``what`` names them in errors."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, type[T]] = {}
        self._lazy: dict[str, str] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available by its ``name``."""
        self._classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def register_lazy(self, name: str, module: str) -> None:
        """Make ``name`` available now and import ``module`` (which registers it) on first use."""
        self._lazy[name] = module

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(set(self._classes) | set(self._lazy))

    def get_class(self, name: str) -> type[T]:
        """The class of ``name``, or a one-line error listing the available names."""
        if isinstance(name, str) and name not in self._classes and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if not isinstance(name, str) or name not in self._classes:
            raise SegcpError(f"unknown {self.what} {name!r}; available: {', '.join(self.names())}")
        return self._classes[name]

    def builtins(self, package: str, entries: dict[str, str]) -> Callable[[str], Any]:
        """Register a package's built-in classes, each module imported on first use, and return the
        package's module ``__getattr__`` that gives each class by its class name (:func:`lazy_classes`).

        ``entries``: registered name → ``"module:ClassName"`` (as an entry point; importing the module
        registers the class under that name).
        """
        classes = {}
        for name, target in entries.items():
            module, _, cls = target.partition(":")
            self.register_lazy(name, module)
            classes[cls] = name
        return lazy_classes(package, classes, self.get_class)


def lazy_classes(module: str, classes: dict[str, str], get_class: Callable[[str], type[Any]]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` that gives its registered classes by class name
    (``classes``: class name → registered name), importing each on first use."""

    def __getattr__(name: str) -> Any:
        if name in classes:
            return get_class(classes[name])
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` that imports ``where[name]`` (a module) on first use of
    ``name`` and returns its attribute: what a command does not use, it does not import."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
