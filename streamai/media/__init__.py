"""Media file IO for offline runs and tests: wav, y4m, resampling, files as frame sources."""

from .resample import resample
from .source import MediaSource, WavSource, Y4MSource, open_source
from .wav import read_wav, write_wav
from .y4m import Y4MReader, Y4MWriter, read_y4m, rgb_to_yuv420, write_y4m, yuv420_to_rgb

__all__ = [
    "MediaSource",
    "WavSource",
    "Y4MReader",
    "Y4MSource",
    "Y4MWriter",
    "open_source",
    "read_wav",
    "read_y4m",
    "resample",
    "rgb_to_yuv420",
    "write_wav",
    "write_y4m",
    "yuv420_to_rgb",
]
