"""Registries filled by the modules of one package: each module registers its entries when it is imported, and
every module of the package is imported the first time the registry is read, so a new entry is one new file there
(attention parts: aaconv.layers; data formats: aaconv.data)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class PackageRegistry(Generic[T]):
    """Entries by name, registered by the modules of `package`."""

    def __init__(self, package: str):
        self.package = package
        self.entries: dict[str, T] = {}
        self.loaded = False

    def add(self, name: str, entry: T) -> T:
        """Registers `entry` as `name`; ValueError if the name is taken."""
        if name in self.entries:
            raise ValueError(f"{name!r} is already registered in {self.package}")
        self.entries[name] = entry
        return entry

    def read(self) -> dict[str, T]:
        """Every entry, by name, in registration order (every module of the package imported first, once)."""
        if not self.loaded:
            self.loaded = True  # set first: a module that reads the registry while it is imported sees it as is
            try:
                package = importlib.import_module(self.package)
                for module in pkgutil.iter_modules(package.__path__):
                    importlib.import_module(f"{self.package}.{module.name}")
            except BaseException:
                self.loaded = False  # the next read imports again and raises the same error, not a partial registry
                raise
        return dict(self.entries)
