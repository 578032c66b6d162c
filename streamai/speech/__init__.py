"""Helpers of the speech stages (vad, asr, translate, tts): audio, text, Whisper decoding, latency."""
