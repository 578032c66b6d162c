"""Cheap reads of SDP text before aiortc parses it: media sections, the ICE ufrag."""

from __future__ import annotations

from collections import Counter

MAX_UFRAG = 256  # RFC 8839: ice-ufrag is 4 to 256 characters


def media_sections(sdp: str) -> Counter[str]:
    """How many ``m=`` sections of each media type (``audio``, ``video``, ``application``...) ``sdp`` has."""
    counts: Counter[str] = Counter()
    for line in sdp.splitlines():
        if line.startswith("m="):
            counts[line[2:].split(" ", 1)[0]] += 1
    return counts


def ice_ufrag(sdp: str) -> str | None:
    """The ICE username fragment of the first media section (or the session), when it is well-formed."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1].strip()
            return ufrag if 4 <= len(ufrag) <= MAX_UFRAG else None
    return None


def candidate_count(sdp: str) -> int:
    """How many ICE candidates (``a=candidate:`` lines) ``sdp`` or a trickle fragment carries."""
    return sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:"))
