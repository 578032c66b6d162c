"""Files the suite leaves in ``test-artifacts/`` for people to read after a run."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Mapping
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def record_fuzz_counts(prefix: str, counts: Mapping[str, int], directory: Path = ARTIFACTS) -> Path:
    """Merge ``counts`` under ``prefix.`` into ``fuzz-counts.json``; safe when parallel test workers write at once."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fuzz-counts.json"
    with open(directory / ".fuzz-counts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update({f"{prefix}.{name}": count for name, count in counts.items()})
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        scratch.replace(path)
    return path
