"""Diffusion pipelines from local folders or the catalog (diffusers), never from a hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .catalog import ModelEntry, ModelNotAvailable, resolve_model


def model_folder(reference: str) -> Path:
    """The local folder for a catalog id or path; builds a generated model (tiny, or SD-Turbo's
    architecture with random weights) into the cache on first use."""
    found = resolve_model(reference)
    if isinstance(found, Path):
        return found
    entry: ModelEntry = found
    if entry.task != "diffusion":
        raise ModelNotAvailable(f"model {entry.id!r} is a {entry.task} model, not a diffusion model")
    if entry.options.get("generate") == "tiny-sd":
        from .tiny_diffusion import ensure_tiny_pipeline

        return ensure_tiny_pipeline()
    if entry.options.get("generate") == "sd-turbo-architecture":
        from .sd_turbo_architecture import ensure_sd_turbo_architecture

        return ensure_sd_turbo_architecture(scale=entry.options.get("scale", "full"))
    entry.require()  # raises, naming the package or the folder to point at
    raise ModelNotAvailable(f"model {entry.id!r}: point the pipeline's 'model:' at its folder")


def tiny_vae_folder(model: Path, reference: str | None) -> str | None:
    """A ``tiny_vae`` reference as a folder: absolute as given; relative, inside the model's folder
    when there (the generated SD-Turbo-architecture model ships its TAESD-shaped one as ``taesd/``)."""
    if not reference:
        return None
    inside = model / reference
    if not Path(reference).is_absolute() and inside.is_dir():
        return str(inside)
    if not Path(reference).expanduser().is_dir():
        raise ModelNotAvailable(f"tiny_vae folder {reference!r} does not exist (nor inside {str(model)!r})")
    return str(Path(reference).expanduser())


def load_pipeline(folder: Path, device: str, dtype_name: str, tiny_vae: str | None, compile_unet: bool = False) -> Any:
    """``AutoPipelineForImage2Image`` from a local folder, on ``device``, ready for one-image batches."""
    import torch
    from diffusers import AutoencoderTiny, AutoPipelineForImage2Image

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailable("device 'cuda' requested but torch sees no CUDA GPU on this node")
    dtype = torch.float16 if dtype_name == "float16" else torch.float32
    pipe = AutoPipelineForImage2Image.from_pretrained(folder, dtype=dtype, local_files_only=True)
    if tiny_vae:
        pipe.vae = AutoencoderTiny.from_pretrained(tiny_vae, dtype=dtype, local_files_only=True)
    pipe = pipe.to(device)
    if device == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet, fullgraph=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
