"""Conversation rooms: several people in several languages, each hearing the others in their own.

``config`` (room pipelines in YAML), ``chains`` (one speaker's speech chains), ``participant``
(a speaker's or listener's peer connection), ``room`` (routing and lifecycle), ``manager``
(the node's rooms). The HTTP side is ``streamai.server.rooms``.
"""
