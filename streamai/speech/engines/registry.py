"""Engine registries: one per model family (vad, asr, mt, tts), keyed by the ``engine:`` name.

A registry knows its built-in engines by import path (``"module:Class"``, imported on
first use, so naming an engine never loads a vendor library) and finds third-party
engines through an entry-point group, ``streamai.engines.<family>``, the way stages
are found through ``streamai.stages``::

    [project.entry-points."streamai.engines.tts"]
    my-voice = "my_package.voice:MyVoice"

The engine class must subclass the family's interface (``Synthesizer`` for tts).
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class UnknownEngine(ValueError):
    """An ``engine:`` name no registry of the family knows; ``str()`` names the known ones."""

    def __init__(self, family: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {family} engine {name!r} (known: {', '.join(known)})")
        self.family = family
        self.name = name
        self.known = known


class EngineRegistry(Generic[E]):
    """Engine classes of one family: built-ins by import path, plus entry points of ``group``."""

    def __init__(self, family: str, base: type[E], builtins: dict[str, str]) -> None:
        self.family = family
        self.base = base
        self.group = f"streamai.engines.{family}"
        self._builtins = dict(builtins)
        self._classes: dict[str, type[E]] = {}
        self._plugins: dict[str, object] | None = None  # entry points by name, loaded on first get
        self.import_errors: dict[str, str] = {}

    def _entry_points(self) -> dict[str, object]:
        if self._plugins is None:
            self._plugins = {e.name: e for e in entry_points(group=self.group) if e.name not in self._builtins}
        return self._plugins

    def names(self) -> list[str]:
        """Every engine name this family knows (built-in, registered and entry points)."""
        return sorted({*self._builtins, *self._classes, *self._entry_points()})

    def register(self, name: str, cls: type[E]) -> None:
        """Add an engine class by hand (tests, embedding applications)."""
        self._check_class(name, cls)
        self._classes[name] = cls

    def check(self, name: str) -> str:
        """``name`` if it is known, else ``UnknownEngine`` (for pydantic validators of ``engine:``)."""
        if name not in self.names():
            raise UnknownEngine(self.family, name, self.names())
        return name

    def get(self, name: str) -> type[E]:
        """The engine class called ``name``; imports its module on first use."""
        if name in self._classes:
            return self._classes[name]
        if name in self._builtins:
            module_name, _, attribute = self._builtins[name].partition(":")
            cls = getattr(importlib.import_module(module_name), attribute)
        elif name in self._entry_points():
            try:
                cls = self._entry_points()[name].load()  # type: ignore[attr-defined]
            except Exception as exc:  # a broken plugin is named, never hides the others
                self.import_errors[name] = f"{type(exc).__name__}: {exc}"
                raise UnknownEngine(self.family, name, self.names()) from exc
        else:
            raise UnknownEngine(self.family, name, self.names())
        self._check_class(name, cls)
        self._classes[name] = cls
        return cls

    def _check_class(self, name: str, cls: object) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{self.family} engine {name!r} must subclass {self.base.__name__}, got {cls!r}")
