"""The full-size stand-in ``sd-turbo-architecture-random``: SD-Turbo's shapes with random weights.

Building it at full size takes minutes and 2.6 GB, so here its modules are instantiated on
PyTorch's meta device (shapes, no memory) and their parameter counts checked against SD 2.1's
published ones; the ``small`` scale (same blocks, narrow widths) is built, saved and loaded
through the project's ``from_pretrained(..., local_files_only=True)`` path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytestmark = pytest.mark.models


def test_full_size_modules_have_sd_turbo_parameter_counts() -> None:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from streamai.models import sd_turbo_architecture as arch

    with torch.device("meta"):
        modules = {
            "unet": UNet2DConditionModel(**arch.unet_config()),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**arch.text_encoder_config())),
            "vae": AutoencoderKL(**arch.vae_config()),
            "taesd": AutoencoderTiny(**arch.taesd_config()),
        }
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}
    # SD 2.x UNet 865.9 M, OpenCLIP ViT-H text tower without its last block 340.4 M, SD VAE 83.7 M, TAESD 2.4 M
    assert counts == {"unet": 865_910_724, "text_encoder": 340_387_840, "vae": 83_653_863, "taesd": 2_445_063}
    unet = modules["unet"].config
    assert tuple(unet.block_out_channels) == (320, 640, 1280, 1280) and unet.cross_attention_dim == 1024
    text = modules["text_encoder"].config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (23, 1024, 16)


def test_small_scale_builds_saves_and_loads_like_real_weights(tmp_path: Path) -> None:
    import torch

    from streamai.models.diffusion import load_pipeline, tiny_vae_folder
    from streamai.models.sd_turbo_architecture import ensure_sd_turbo_architecture

    folder = ensure_sd_turbo_architecture(tmp_path, "small")
    assert ensure_sd_turbo_architecture(tmp_path, "small") == folder  # cached: built once
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionImg2ImgPipeline"
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    unet = json.loads((folder / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [32, 64, 128, 128] and unet["layers_per_block"] == 2
    assert unet["down_block_types"][-1] == "DownBlock2D" and unet["use_linear_projection"] is True
    text = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert text["num_hidden_layers"] == 23 and text["vocab_size"] == 49408
    pipe = load_pipeline(folder, "cpu", "float32", tiny_vae_folder(folder, "taesd"))
    assert type(pipe.vae).__name__ == "AutoencoderTiny" and pipe.unet.dtype == torch.float32
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    image = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        out = pipe(
            prompt="a statue", image=image, strength=0.5, num_inference_steps=2, guidance_scale=0.0, output_type="np"
        ).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    with pytest.raises(Exception, match="tiny_vae folder"):
        tiny_vae_folder(folder, "no-such-taesd")
