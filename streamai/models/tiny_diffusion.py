"""A tiny, randomly initialised Stable Diffusion img2img pipeline, built from configs.

Real diffusion weights cannot be downloaded here, so tests, the demo and the
benchmark use this one: a UNet2DConditionModel, an AutoencoderTiny, a 2-layer CLIP
text encoder with a byte-level tokenizer built locally, and an LCMScheduler. It is
written with ``save_pretrained`` so that it loads through exactly the same
``from_pretrained(path, local_files_only=True)`` code path as real SD-Turbo weights.
Its output is noise-like: it proves the plumbing and the timing, not the art.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VERSION = "v2"  # bump when the configs below change, so caches rebuild


def default_cache_dir() -> Path:
    """Where generated models live: ``$STREAMAI_CACHE`` or ``~/.cache/streamai``."""
    base = os.environ.get("STREAMAI_CACHE") or Path.home() / ".cache" / "streamai"
    return Path(base) / "models"


def _tokenizer():  # -> CLIPTokenizer
    """A byte-level CLIP BPE tokenizer with 512 byte tokens and a few merges, no downloads."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for pair in ("th", "he", "in", "er", "an", "re", "on", "at", "en", "es"):
        merged = pair[0] + pair[1] + "</w>"
        merges.append((pair[0], pair[1] + "</w>"))
        vocab.setdefault(merged, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_pipeline(seed: int = 0):  # -> StableDiffusionImg2ImgPipeline
    """The tiny pipeline in memory, deterministic for a given ``seed``."""
    import torch
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    _make_visible(vae, text_encoder, unet)
    return StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _make_visible(vae, text_encoder, unet) -> None:
    """Random weights decode to near-black and barely feel the prompt; nudge them.

    The decoder's last convolution gets a mid-grey bias and 3x gain (a grey, textured
    face instead of a black square); the text encoder's final layer norm 8x gain, the
    UNet's cross-attention outputs 20x and its output convolution 10x, so that a prompt
    change moves the face by 10-15 grey levels (well above a video codec's noise), as a
    real model's restyling would.
    """
    import torch

    with torch.no_grad():
        last = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(3.0)
        last.bias.fill_(0.5)
        text_encoder.get_submodule("final_layer_norm").weight.mul_(8.0)
        for name, module in unet.named_modules():
            if name.endswith("attn2.to_out.0"):  # cross-attention: where the prompt enters
                module.weight.mul_(20.0)
                module.bias.mul_(20.0)
        unet.conv_out.weight.mul_(10.0)
        unet.conv_out.bias.mul_(10.0)


def ensure_tiny_pipeline(cache_dir: str | Path | None = None) -> Path:
    """The folder holding the saved tiny pipeline, building it on first use (idempotent, atomic)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-sd-generated-{VERSION}"
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-sd-", dir=root))
    try:
        build_tiny_pipeline().save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
