"""Where weights come from: the model catalog (installed packages, local paths) and shared loading."""

from .catalog import Catalog, ModelEntry, ModelNotAvailable, catalog_row, resolve_model
from .shared import SharedModels, acquire_model

__all__ = [
    "Catalog",
    "ModelEntry",
    "ModelNotAvailable",
    "SharedModels",
    "acquire_model",
    "catalog_row",
    "resolve_model",
]
