"""A WHIP sender built on GStreamer's webrtcbin (not streamai code): test pattern + tone -> a WHIP endpoint.

Runs under the system Python with PyGObject (Debian: python3-gi, gir1.2-gst-plugins-bad-1.0).
Only the HTTP POST/DELETE is ours; SDP, ICE, DTLS, SRTP, RTP and the codecs are GStreamer's.

    python3 tests/whep/gst_whip_send.py URL [--seconds 5] [--token T] [--codec vp8|h264] [--loopback]

Prints one JSON line: the resource URL, the HTTP statuses and GStreamer's connection state.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO = {
    "vp8": "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "openh264enc ! h264parse ! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency ! "
    "application/x-rtp,media=video,encoding-name=H264,payload=102,packetization-mode=(string)1",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--token")
    parser.add_argument("--codec", choices=sorted(VIDEO), default="vp8")
    parser.add_argument("--loopback", action="store_true", help="gather 127.0.0.1 candidates only")
    parser.add_argument("--no-delete", action="store_true", help="leave the session for the caller to delete")
    args = parser.parse_args()

    Gst.init(None)
    pipeline = Gst.parse_launch(
        "webrtcbin name=send bundle-policy=max-bundle "
        "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1 ! "
        f"videoconvert ! queue ! {VIDEO[args.codec]} ! send. "
        "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
        "audio/x-raw,rate=48000,channels=1 ! opusenc ! rtpopuspay pt=111 ! "
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! queue ! send. "
    )
    webrtc = pipeline.get_by_name("send")
    agent = webrtc.get_property("ice-agent")  # held for the pipeline's life: PyGObject unrefs a dropped one
    if args.loopback:
        agent.emit("add-local-ip-address", "127.0.0.1")
    loop = GLib.MainLoop()
    result: dict[str, object] = {"codec": args.codec}
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"

    def fail(message: str) -> None:
        result["error"] = message
        loop.quit()

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        result["offer_candidates"] = offer.count("a=candidate:")
        request = urllib.request.Request(args.url, data=offer.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result["post_status"] = response.status
                result["resource"] = urllib.parse.urljoin(args.url, response.headers["Location"])
                session_token = response.headers.get("Streamai-Session-Token")  # DELETE needs it, not the API token
                if session_token:
                    headers["Authorization"] = f"Bearer {session_token}"
                answer_text = response.read().decode()
        except urllib.error.HTTPError as exc:
            result["post_status"] = exc.code
            fail(exc.read().decode(errors="replace"))
            return False
        _, sdp = GstSdp.SDPMessage.new_from_text(answer_text)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        GLib.timeout_add(int(args.seconds * 1000), loop.quit)
        return False

    def on_gathering(element: Gst.Element, _pspec: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(post_offer)  # non-trickle: the offer carries every candidate

    def on_offer(promise: Gst.Promise) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            fail(f"create-offer failed: {reply.to_string() if reply is not None else None}")
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element: Gst.Element) -> None:
        for index in range(2):
            transceiver = element.emit("get-transceiver", index)
            if transceiver is not None:
                transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer))

    def on_state(element: Gst.Element, _pspec: object) -> None:
        state = element.get_property("connection-state")
        result.setdefault("states", []).append(state.value_nick)  # type: ignore[union-attr]

    def on_message(_bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            fail(f"GStreamer error: {error.message}")

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_state)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int((args.seconds + 15) * 1000), lambda: fail("timed out") or False)
    started = time.monotonic()
    loop.run()
    result["ran_s"] = round(time.monotonic() - started, 1)
    if result.get("resource") and not args.no_delete:
        request = urllib.request.Request(str(result["resource"]), headers=headers, method="DELETE")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result["delete_status"] = response.status
        except urllib.error.HTTPError as exc:
            result["delete_status"] = exc.code
    pipeline.set_state(Gst.State.NULL)
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
