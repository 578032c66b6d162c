"""The bounded decode queue: a backlog is never decoded late; the stream resumes at a keyframe."""

from __future__ import annotations

from dataclasses import dataclass

from streamai.transport.decode_queue import LatestDecodeQueue, is_keyframe

KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A])  # VP8 frame tag with the key-frame bit clear
INTER = bytes([0x31, 0x02, 0x00])


@dataclass
class Codec:
    name: str = "VP8"


@dataclass
class Encoded:
    data: bytes


def test_keyframes_are_recognised() -> None:
    assert is_keyframe("VP8", KEY) and not is_keyframe("VP8", INTER)
    assert is_keyframe("H264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x65\x88")  # SPS + IDR slice
    assert not is_keyframe("H264", b"\x00\x00\x00\x01\x41\x9a")  # a non-IDR slice


def test_backlog_is_dropped_then_inter_frames_wait_for_a_keyframe() -> None:
    requests: list[int] = []
    decode = LatestDecodeQueue(max_frames=3, request_keyframe=lambda: requests.append(1))
    for _ in range(3):
        decode.put((Codec(), Encoded(INTER)))
    assert decode.qsize() == 3
    decode.put((Codec(), Encoded(INTER)))  # a fourth waiting frame: the decoder is behind
    assert decode.qsize() == 0 and decode.dropped == 4 and requests == [1]
    decode.put((Codec(), Encoded(INTER)))  # cannot be decoded without its references
    assert decode.qsize() == 0 and decode.dropped == 5
    decode.put((Codec(), Encoded(KEY)))  # a fresh start
    decode.put((Codec(), Encoded(INTER)))
    assert decode.qsize() == 2 and decode.resyncs == 1
    decode.put(None)  # the end-of-stream marker always passes
    assert decode.qsize() == 3
