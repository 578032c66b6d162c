"""DTLS role for answers: take the server side so RSA-certificate peers can connect.

aiortc answers an ``actpass`` offer as the DTLS client and offers only ECDHE-ECDSA
cipher suites. A peer whose certificate is RSA (GStreamer's webrtcbin, hence every
GStreamer-based WHIP sender) is then the DTLS server with no shared cipher: the
handshake fails. As the server, aiortc authenticates with its own ECDSA certificate
and the client's certificate type does not matter. ``a=setup:passive`` in an answer
is allowed by RFC 8842 and accepted by browsers.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection


def answer_as_dtls_server(pc: RTCPeerConnection) -> int:
    """Call between ``setRemoteDescription(offer)`` and ``createAnswer``; returns transports changed.

    Only transports whose role is still open (the offer said ``actpass``) change;
    aiortc has no public setting for this, so it reaches its transports' role.
    """
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    sctp = pc.sctp
    if sctp is not None:
        transports.append(sctp.transport)
    changed = 0
    for transport in {id(t): t for t in transports}.values():
        if getattr(transport, "_role", None) == "auto":
            transport._set_role("server")
            changed += 1
    return changed
