"""SD-Turbo's exact architecture with random weights: the full-size stand-in for speed measurements.

Real SD-Turbo weights cannot be had on these machines, but speed does not depend on the
weights' values, only on the shapes. This module builds every component from configs with
SD-Turbo's shapes, saves the pipeline with ``save_pretrained`` (float16 on disk, 2.6 GB) and
it is then loaded through the same ``from_pretrained(path, local_files_only=True)`` code as a
real copy of ``stabilityai/sd-turbo``. Its output is noise: it measures time and memory,
not pictures.

The shapes and where they come from (``stabilityai/sd-turbo``, diffusers layout, whose
model card says it is a distilled Stable Diffusion 2.1; the same numbers follow from
Stability AI's ``configs/stable-diffusion/v2-inference.yaml`` through diffusers'
``convert_from_ckpt.create_unet_diffusers_config``):

- UNet (``unet/config.json``): ``UNet2DConditionModel``, block_out_channels 320/640/1280/1280,
  down CrossAttnDown x3 + Down, up Up + CrossAttnUp x3, layers_per_block 2,
  attention_head_dim [5, 10, 20, 20] (heads per block: 64-wide heads), cross_attention_dim
  1024, use_linear_projection true, norm 32 groups / eps 1e-5, sample_size 64 (512 px);
  865 M parameters.
- Text encoder (``text_encoder/config.json``): ``CLIPTextModel`` = OpenCLIP ViT-H/14's text
  tower minus its last block (SD 2.x reads the penultimate layer; diffusers'
  ``convert_open_clip_checkpoint`` drops ``resblocks.23``): 23 layers, width 1024, 16 heads,
  MLP 4096, GELU, 77 positions, vocabulary 49,408; 340 M parameters.
- VAE (``vae/config.json``): ``AutoencoderKL`` 128/256/512/512, 2 layers per block, 4 latent
  channels, scaling factor 0.18215; 84 M parameters.
- Tiny autoencoder (``taesd/``, not part of SD-Turbo; madebyollin/taesd's shape, which is
  diffusers' ``AutoencoderTiny`` default): 64-channel blocks, encoder 1/3/3/3 and decoder
  3/3/3/1 blocks, 4 latent channels; 2.4 M parameters. Use it with ``tiny_vae: taesd``.
- Scheduler (``scheduler/scheduler_config.json``): ``EulerDiscreteScheduler``, scaled_linear
  0.00085..0.012, 1000 steps, epsilon prediction, ``timestep_spacing: trailing``.
- Tokenizer: not SD-Turbo's 49,408-entry BPE (no package ships it); the byte-level BPE of
  the tiny model (token ids all fall inside the real vocabulary's embedding table, whose
  shape is kept). Tokenising costs microseconds either way.

``scale="small"`` keeps every block, layer count and the topology and divides the widths
(UNet 32/64/128/128 with 32-wide heads, text width 64, VAE 16/32/64/64, TAESD 16): the same
code path at a size a CPU test runs in seconds.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from .tiny_diffusion import _tokenizer, default_cache_dir

VERSION = "v1"  # bump when the configs below change, so caches rebuild
Scale = Literal["full", "small"]
MODEL_ID = "sd-turbo-architecture-random"


def unet_config(scale: Scale = "full") -> dict[str, Any]:
    """``unet/config.json`` of SD-Turbo (widths divided by 10 at ``small``)."""
    full = scale == "full"
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (320, 640, 1280, 1280) if full else (32, 64, 128, 128),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "attention_head_dim": (5, 10, 20, 20) if full else (1, 2, 4, 4),
        "cross_attention_dim": 1024 if full else 64,
        "use_linear_projection": True,
        "upcast_attention": False,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
    }


def text_encoder_config(scale: Scale = "full") -> dict[str, Any]:
    """``text_encoder/config.json`` of SD-Turbo (OpenCLIP ViT-H/14 text, 23 layers)."""
    full = scale == "full"
    return {
        "vocab_size": 49408,
        "hidden_size": 1024 if full else 64,
        "intermediate_size": 4096 if full else 256,
        "num_hidden_layers": 23,
        "num_attention_heads": 16 if full else 4,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 512 if full else 64,
    }


def vae_config(scale: Scale = "full") -> dict[str, Any]:
    """``vae/config.json`` of SD-Turbo (the standard SD VAE)."""
    full = scale == "full"
    return {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 256, 512, 512) if full else (16, 32, 64, 64),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32 if full else 8,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    }


def taesd_config(scale: Scale = "full") -> dict[str, Any]:
    """madebyollin/taesd's shape (diffusers' ``AutoencoderTiny`` defaults)."""
    width = 64 if scale == "full" else 16
    return {
        "in_channels": 3,
        "out_channels": 3,
        "encoder_block_out_channels": (width,) * 4,
        "decoder_block_out_channels": (width,) * 4,
        "num_encoder_blocks": (1, 3, 3, 3),
        "num_decoder_blocks": (3, 3, 3, 1),
        "latent_channels": 4,
        "upsampling_scaling_factor": 2,
        "act_fn": "relu",
        "latent_magnitude": 3,
        "latent_shift": 0.5,
        "scaling_factor": 1.0,
        "force_upcast": False,
    }


SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "interpolation_type": "linear",
}


def build(scale: Scale = "full", seed: int = 0) -> tuple[Any, Any]:
    """The pipeline (float16 weights) and its TAESD-shaped tiny autoencoder, in memory."""
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    dtype = torch.float16  # as SD-Turbo's fp16 variant; loading upcasts where float32 is asked for
    unet = UNet2DConditionModel(**unet_config(scale)).to(dtype)  # built and halved one at a time: peak RAM
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **text_encoder_config(scale),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).to(dtype)
    vae = AutoencoderKL(**vae_config(scale)).to(dtype)
    taesd = AutoencoderTiny(**taesd_config(scale)).to(dtype)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe, taesd


def ensure_sd_turbo_architecture(cache_dir: str | Path | None = None, scale: Scale = "full") -> Path:
    """The folder of the saved stand-in, building it on first use (idempotent, atomic); the
    TAESD-shaped autoencoder is its ``taesd/`` subfolder."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{MODEL_ID}-{scale}-{VERSION}"
    if (target / "model_index.json").is_file() and (target / "taesd" / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sd-turbo-arch-", dir=root))
    try:
        pipe, taesd = build(scale)
        pipe.save_pretrained(staging)
        taesd.save_pretrained(staging / "taesd")
        del pipe, taesd
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
