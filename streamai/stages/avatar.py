"""``avatar-diffusion``: restyle each face crop with a text prompt, img2img, StreamDiffusion style.

A few-step model (SD-Turbo, an LCM) at a fixed low strength, batch of one, under
``torch.inference_mode``; fp16 and channels-last on CUDA. The prompt's text
embeddings are computed once and again only when a ``PROMPT`` control frame brings
a new prompt, which applies from the next frame. The noise is the same every frame
(fixed seed), which keeps a still face still. Optional similarity skip: when the
input barely changed, the last output is reused. ``model:`` names a catalog entry
(``tiny-sd-generated``, ``sd-turbo``) or a folder in diffusers layout; loading is
``from_pretrained(path, local_files_only=True)``, shared across sessions.

Each output frame carries ``meta["prompt"]``; an ``avatar_prompt`` event names the
prompt on the first frame that uses it and then every ``event_every`` frames.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..frames import ControlFrame, ControlKind, Frame, VideoFrame, derived
from ..frames import FrameKind as K
from ..models import acquire_model
from ..models.diffusion import load_pipeline, model_folder
from ..stage import Stage, stage

DEFAULT_MODEL = "tiny-sd-generated"


class AvatarParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = "a portrait, oil painting"
    negative_prompt: str = ""
    steps: int = Field(2, ge=1, le=50, description="scheduler steps; steps x strength of them run")
    strength: float = Field(0.5, gt=0, le=1, description="how far from the camera image the output may go")
    guidance_scale: float = Field(0.0, ge=0, description="0 for turbo/LCM models (no negative pass)")
    size: int | None = Field(None, ge=64, le=1024, description="side the model runs at (default: the crop's)")
    seed: int = 0
    tiny_vae: str | None = Field(None, description="folder of an AutoencoderTiny (TAESD) that replaces the VAE")
    dtype: Literal["auto", "float16", "float32"] = "auto"
    skip_threshold: float = Field(0.0, ge=0, le=1, description="reuse the last output under this input change (0: off)")
    max_skips: int = Field(5, ge=0, description="recompute after this many reuses in a row")
    event_every: int = Field(30, ge=1, description="also name the prompt every Nth output frame")
    warmup: bool = True

    @model_validator(mode="after")
    def _runs_a_step(self) -> AvatarParams:
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps x strength must be at least 1 (got {self.steps} x {self.strength})")
        return self


@stage("avatar-diffusion")
class AvatarDiffusion(Stage):
    consumes = frozenset({K.VIDEO})
    emits = frozenset({K.VIDEO})
    Params = AvatarParams
    client_settable = frozenset({"prompt", "negative_prompt", "strength", "seed", "steps", "guidance_scale"})
    live_params = frozenset({"prompt"})  # the params message may change the prompt (see on_control)

    async def start(self) -> None:
        p = self.params
        device = self.context.device
        dtype = p.dtype if p.dtype != "auto" else ("float16" if device == "cuda" else "float32")
        reference = self.context.model or DEFAULT_MODEL
        key = f"diffusion:{reference}:{device}:{dtype}:{p.tiny_vae or ''}"

        def load() -> Any:  # on a thread: may build the tiny generated model first
            return load_pipeline(model_folder(reference), device, dtype, p.tiny_vae)

        self._pipe, self._release = await acquire_model(self.context, key, load)
        self._device = device
        self._prompt = p.prompt  # the prompt the next frame uses
        self._embedded: str | None = None
        self._embeds: tuple[Any, Any] = (None, None)
        self._last_thumb: np.ndarray | None = None
        self._last_output: np.ndarray | None = None
        self._skips = 0
        self._since_event = 0
        self._event_prompt: str | None = None
        self.frames_generated = 0
        self.frames_skipped = 0
        if p.warmup:  # two passes on a textured picture: the first real frame is otherwise seconds late
            side = p.size or 256
            picture = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
            embeds = await self._embeddings()
            for _ in range(2):
                await self.run_blocking(self._generate, picture, *embeds)

    async def stop(self) -> None:
        release = getattr(self, "_release", None)
        if release is not None:
            self._pipe = None
            self._release = None
            release()

    async def on_control(self, frame: ControlFrame) -> None:
        """PROMPT ``{"text": ...}``, or PARAMS ``{"prompt": ...}`` / ``{stage_name: {"prompt": ...}}``."""
        data = frame.data
        if frame.control is ControlKind.PARAMS:
            own = data.get(self.context.name)
            data = own if isinstance(own, dict) else data
        elif frame.control is not ControlKind.PROMPT:
            return
        text = data.get("text", data.get("prompt"))
        if isinstance(text, str) and text.strip():
            self._prompt = text.strip()

    async def _embeddings(self) -> tuple[Any, Any]:
        """Prompt embeddings for the current prompt, computed only when it changed."""
        if self._embedded != self._prompt:
            self._embeds = await self.run_blocking(self._encode, self._prompt)
            self._embedded = self._prompt
        return self._embeds

    def _encode(self, prompt: str) -> tuple[Any, Any]:
        import torch

        guided = self.params.guidance_scale > 1
        with torch.inference_mode():
            embeds, negative = self._pipe.encode_prompt(
                prompt, self._device, 1, guided, negative_prompt=self.params.negative_prompt or None
            )
        return embeds, negative if guided else None

    def _generate(self, image: np.ndarray, embeds: Any, negative: Any) -> np.ndarray:
        """One img2img pass on an (H, W, 3) uint8 crop; the result has the crop's size."""
        import torch
        import torch.nn.functional as F

        p, pipe = self.params, self._pipe
        height, width = image.shape[:2]
        side = p.size or max(64, round(width / 64) * 64)
        with torch.inference_mode():
            x = torch.from_numpy(image).to(self._device).permute(2, 0, 1)[None].to(pipe.unet.dtype) / 255
            if (height, width) != (side, side):
                x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            if self._device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            out = pipe(
                prompt_embeds=embeds,
                negative_prompt_embeds=negative,
                image=x,
                strength=p.strength,
                num_inference_steps=p.steps,
                guidance_scale=p.guidance_scale,
                generator=torch.Generator(self._device).manual_seed(p.seed),
                output_type="pt",
            ).images
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out.float(), size=(height, width), mode="bilinear", antialias=True)
            return (out[0].permute(1, 2, 0).float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    def _similar(self, image: np.ndarray) -> bool:
        """Whether ``image`` barely differs from the last generated input (a 32x32 thumbnail check)."""
        threshold = self.params.skip_threshold
        step_y, step_x = max(1, image.shape[0] // 32), max(1, image.shape[1] // 32)
        thumb = image[::step_y, ::step_x].astype(np.float32) / 255
        previous, self._last_thumb = self._last_thumb, thumb
        if threshold <= 0 or previous is None or previous.shape != thumb.shape or self._last_output is None:
            return False
        if self._last_output.shape != image.shape or self._skips >= self.params.max_skips:
            return False
        if float(np.abs(thumb - previous).mean()) >= threshold:
            return False
        self._last_thumb = previous  # compare against the input that was really generated from
        return True

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, VideoFrame)
        changed = self._embedded != self._prompt
        embeds, negative = await self._embeddings()
        prompt = self._embedded
        if not changed and self._similar(frame.image):
            self._skips += 1
            self.frames_skipped += 1
            output = self._last_output
        else:
            if changed:
                self._similar(frame.image)  # refresh the thumbnail
            output = await self.run_blocking(self._generate, frame.image, embeds, negative)
            self._last_output, self._skips = output, 0
            self.frames_generated += 1
        assert output is not None
        self._since_event += 1
        out = derived(frame, image=output, meta={**frame.meta, "prompt": prompt})
        new_prompt = prompt != self._event_prompt
        if new_prompt or self._since_event >= self.params.event_every:
            self.emit_event("avatar_prompt", prompt=prompt, pts=out.pts, seq=out.seq, changed=new_prompt)
            self._event_prompt, self._since_event = prompt, 0
        await self.push(out)
