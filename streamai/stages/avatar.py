"""``avatar-diffusion``: restyle each face crop with a text prompt, img2img, StreamDiffusion style.

A few-step model (SD-Turbo, an LCM) at a fixed low strength, batch of one, under
``torch.inference_mode``; fp16 and channels-last on CUDA. The prompt's text
embeddings are computed once and again only when a ``PROMPT`` control frame brings
a new prompt. That encoding is queued on the stage's thread the moment the prompt
reaches the node (``prepare_control``), never inside a frame already admitted; the
next frame the stage starts waits for it (admission counts that wait through
``pending_cost_s``) and is the first one generated with the new prompt. The noise is
the same every frame (fixed seed), which keeps a still face still. Optional
similarity skip: when the input barely changed, the last output is reused.
``model:`` names a catalog entry (``tiny-sd-generated``, ``sd-turbo-architecture-random``,
``sd-turbo``) or a folder in diffusers layout; loading is
``from_pretrained(path, local_files_only=True)``, shared across sessions.

Each output frame carries ``meta["prompt"]``; an ``avatar_prompt`` event names the
prompt on the first frame that uses it (with ``latency_ms``: the prompt's arrival at
the node to that frame leaving this stage, also the ``prompt_to_frame`` histogram in
``/metrics``) and then every ``event_every`` frames.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..engine.estimator import ServiceTimeEstimator
from ..frames import ControlFrame, ControlKind, Frame, VideoFrame, derived, now
from ..frames import FrameKind as K
from ..models import acquire_model
from ..models.diffusion import load_pipeline, model_folder, tiny_vae_folder
from ..stage import Stage, stage

log = logging.getLogger(__name__)

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
    tiny_vae: str | None = Field(
        None, description="folder of an AutoencoderTiny (TAESD) replacing the VAE; relative: inside the model's folder"
    )
    dtype: Literal["auto", "float16", "float32"] = "auto"
    compile_unet: bool = Field(False, description="torch.compile the UNet (CUDA nodes; the first frames take minutes)")
    skip_threshold: float = Field(0.0, ge=0, le=1, description="reuse the last output under this input change (0: off)")
    max_skips: int = Field(5, ge=0, description="recompute after this many reuses in a row")
    event_every: int = Field(30, ge=1, description="also name the prompt every Nth output frame")
    threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="torch's CPU threads (process-wide in torch: the node's torch stages share it; null: torch's "
        "default, one a core). 1 on a 2-core node with other work: the tiny model's pass took 106-123 ms with "
        "a core busy at 1 thread, 279-1069 ms at 2 (quiet: 107-121 vs 67-82 ms)",
    )
    warmup: bool = True

    @model_validator(mode="after")
    def _runs_a_step(self) -> AvatarParams:
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps x strength must be at least 1 (got {self.steps} x {self.strength})")
        return self


@dataclass
class _PendingPrompt:
    """A prompt whose embeddings are being computed on the stage's thread."""

    text: str
    arrived: float  # when the prompt reached the node (the control frame's capture time)
    queued: float
    embeddings: asyncio.Future[tuple[Any, Any]]


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
        if p.threads is not None and device == "cpu":
            import torch

            torch.set_num_threads(p.threads)
        dtype = p.dtype if p.dtype != "auto" else ("float16" if device == "cuda" else "float32")
        reference = self.context.model or DEFAULT_MODEL
        key = f"diffusion:{reference}:{device}:{dtype}:{p.tiny_vae or ''}:{p.compile_unet}"

        def load() -> Any:  # on a thread: may build a generated model first
            folder = model_folder(reference)
            return load_pipeline(folder, device, dtype, tiny_vae_folder(folder, p.tiny_vae), p.compile_unet)

        self._pipe, self._release = await acquire_model(self.context, key, load)
        self._device = device
        self._prompt = p.prompt  # the prompt the next frame uses
        self._embedded: str | None = None
        self._embeds: tuple[Any, Any] = (None, None)
        self._pending: _PendingPrompt | None = None
        self._encode_time = ServiceTimeEstimator(prior_s=0.05)
        self._last_thumb: np.ndarray | None = None
        self._last_output: np.ndarray | None = None
        self._skips = 0
        self._since_event = 0
        self._event_prompt: str | None = None
        self.frames_generated = 0
        self.frames_skipped = 0
        started = now()
        self._embeds = await self.run_blocking(self._encode, self._prompt)
        self._embedded = self._prompt
        self._encode_time.update(now() - started)
        if p.warmup:  # a pass or two per size: the first real frame at a size is otherwise seconds late
            sizes = [p.size or 256] + [getattr(level, "size", None) or 256 for level in self.ladder_params[1:]]
            picture = np.random.default_rng(0).integers(0, 256, (max(sizes), max(sizes), 3), dtype=np.uint8)
            for index, side in enumerate(dict.fromkeys(sizes)):
                for _ in range(2 if index == 0 else 1):
                    await self.run_blocking(self._generate, picture[:side, :side], *self._embeds, side)

    async def stop(self) -> None:
        release = getattr(self, "_release", None)
        if release is not None:
            self._pipe = None
            self._release = None
            release()

    def _prompt_in(self, frame: ControlFrame) -> str | None:
        """The prompt a control frame sets: PROMPT ``{"text": ...}``, or PARAMS ``{"prompt": ...}`` /
        ``{stage_name: {"prompt": ...}}``; None when it sets none."""
        data = frame.data
        if frame.control is ControlKind.PARAMS:
            own = data.get(self.context.name)
            data = own if isinstance(own, dict) else data
        elif frame.control is not ControlKind.PROMPT:
            return None
        text = data.get("text", data.get("prompt"))
        return text.strip() if isinstance(text, str) and text.strip() else None

    def prepare_control(self, frame: ControlFrame) -> None:
        """A new prompt reached the node: queue its embeddings on the stage's thread now."""
        text = self._prompt_in(frame)
        if text is None or getattr(self, "_pipe", None) is None or text == self._prompt:
            return  # no prompt, not started (or stopped), or the one already in use
        self._prompt = text
        self._pending = _PendingPrompt(text, frame.capture_time, now(), self.submit_blocking(self._encode, text))

    async def on_control(self, frame: ControlFrame) -> None:
        """In order: a prompt not prepared on arrival (a stage used outside a pipeline) is queued here."""
        self.prepare_control(frame)

    def pending_cost_s(self) -> float:
        """The encoding still ahead of the next frame (it runs on the same thread, first)."""
        pending = self._pending if hasattr(self, "_pending") else None
        if pending is None or pending.embeddings.done():
            return 0.0
        return max(0.0, self._encode_time.estimate - (now() - pending.queued))

    async def _embeddings(self) -> tuple[tuple[Any, Any], _PendingPrompt | None]:
        """Embeddings for the current prompt, and the pending prompt they complete (if a new one)."""
        pending = self._pending
        if pending is None or pending.text != self._prompt:
            return self._embeds, None
        try:
            embeds = await pending.embeddings
        except Exception as exc:  # keep the old prompt: one bad prompt never ends the avatar
            log.warning("prompt %r could not be encoded: %s", pending.text, exc)
            self.emit_event("warning", message=f"prompt not applied: {exc}")
            self._pending = None
            self._prompt = self._embedded or self.params.prompt
            return self._embeds, None
        self._encode_time.update(now() - pending.queued)
        self._pending = None
        self._embeds, self._embedded = embeds, pending.text
        return embeds, pending

    def _encode(self, prompt: str) -> tuple[Any, Any]:
        import torch

        guided = self.params.guidance_scale > 1
        with torch.inference_mode():
            embeds, negative = self._pipe.encode_prompt(
                prompt, self._device, 1, guided, negative_prompt=self.params.negative_prompt or None
            )
        return embeds, negative if guided else None

    def _generate(self, image: np.ndarray, embeds: Any, negative: Any, side: int | None = None) -> np.ndarray:
        """One img2img pass on an (H, W, 3) uint8 crop at ``side`` (default: the current params'); the
        result has the crop's size."""
        import torch
        import torch.nn.functional as F

        p, pipe = self.params, self._pipe
        height, width = image.shape[:2]
        side = side or p.size or max(64, round(width / 64) * 64)
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
        (embeds, negative), applied = await self._embeddings()
        prompt = self._embedded
        if applied is None and self._similar(frame.image):
            self._skips += 1
            self.frames_skipped += 1
            output = self._last_output
        else:
            if applied is not None:
                self._similar(frame.image)  # refresh the thumbnail
            output = await self.run_blocking(self._generate, frame.image, embeds, negative)
            self._last_output, self._skips = output, 0
            self.frames_generated += 1
        assert output is not None
        self._since_event += 1
        out = derived(frame, image=output, meta={**frame.meta, "prompt": prompt})
        new_prompt = prompt != self._event_prompt
        if new_prompt or self._since_event >= self.params.event_every:
            timing: dict[str, float] = {}
            if applied is not None:  # the first frame generated with a prompt that arrived while running
                latency = now() - applied.arrived
                self.observe("prompt_to_frame", latency)
                timing = {"latency_ms": round(latency * 1000, 1)}
            self.emit_event("avatar_prompt", prompt=prompt, pts=out.pts, seq=out.seq, changed=new_prompt, **timing)
            self._event_prompt, self._since_event = prompt, 0
        await self.push(out)
