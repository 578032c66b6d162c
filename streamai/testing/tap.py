"""What a broadcast encodes, read before the network: an in-process viewer that keeps every packet.

A :class:`BroadcastTap` subscribes to a :class:`~streamai.transport.relay.Broadcast`'s Opus audio like
a viewer's sender would, keeps each encoded packet with the time the broadcast handed it over, and
decodes them afterwards. A test compares what the node sent with what its peers received, so that a
receiver dropping pieces is told apart from the node synthesising the wrong thing.
"""

from __future__ import annotations

import asyncio
import contextlib

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from ..frames import now
from ..transport.relay import Broadcast, ViewerTrack


class BroadcastTap:
    """Every Opus packet ``broadcast`` encodes from the moment of :meth:`start` to :meth:`stop`."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self.packets: list[tuple[float, bytes]] = []  # (handed over, on this process's clock; Opus payload)
        self.track: ViewerTrack | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.track = self.broadcast.subscribe("audio", "opus")
        self._task = asyncio.create_task(self._drain(self.track), name="broadcast-tap")

    async def _drain(self, track: ViewerTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                packet = await track.recv()
                self.packets.append((now(), bytes(packet)))

    async def stop(self) -> None:
        if self.track is not None:
            self.track.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def skipped(self) -> int:
        """Packets the tap itself fell behind on (its queue is a viewer's: bounded)."""
        return self.track.counters.skipped if self.track is not None else 0

    def decoded(self, since: float | None = None) -> np.ndarray:
        """The packets handed over after ``since``, decoded: one mono int16 array at 48 kHz."""
        decoder = av.CodecContext.create("opus", "r")
        to_mono = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        chunks: list[np.ndarray] = []
        for at, data in self.packets:
            for frame in decoder.decode(av.Packet(data)):
                if since is None or at >= since:
                    chunks += [chunk.to_ndarray().reshape(-1) for chunk in to_mono.resample(frame)]
        return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
