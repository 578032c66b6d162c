"""Publish one WHIP stream (barcoded test pattern + marker tone) from the Python peer for a while.

    python tests/whep/publish.py BASE_URL [--pipeline transform] [--seconds 40]

Prints ``SESSION <id>`` once the node answered, then ``DONE <json>`` after deleting the session.
Used by the browser WHEP test, which runs it inside the loopback network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiohttp

from streamai.bench.whep import WhipPublisher
from streamai.transport.ice import offer_loopback_candidates_only


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--pipeline", default="transform")
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    offer_loopback_candidates_only()
    async with aiohttp.ClientSession() as http:
        publisher = WhipPublisher(f"{args.base}/whip/{args.pipeline}")
        await publisher.start(http)
        # the session id, its own token (the test's GETs) and its viewer token (the viewer pages)
        print(f"SESSION {publisher.session_id} {publisher.session_token} {publisher.viewer_token}", flush=True)
        try:
            await asyncio.sleep(args.seconds)
        finally:
            await publisher.stop(http)
    print("DONE " + json.dumps({"frames_sent": len(publisher.video.sent_at)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
