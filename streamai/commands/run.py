"""``streamai run FILE --input WAV_OR_Y4M --output OUT``: a pipeline over media files, offline, at real-time pace.

Speech pipelines print what was heard (final transcripts) and said (translated clauses)
as it happens, with the media time (partial transcripts too with ``-v``), and
``--captions out.vtt`` / ``out.srt`` writes one cue an utterance with both languages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a pipeline over a wav/y4m file at real-time pace; write output and a latency report"
    )
    parser.add_argument("file", metavar="FILE", help="pipeline YAML")
    parser.add_argument(
        "--input", "--input2", dest="inputs", action="append", required=True, metavar="WAV_OR_Y4M",
        help="input media file (16-bit wav or 4:2:0 y4m); repeat to feed audio and video together",
    )  # fmt: skip
    parser.add_argument(
        "--output", dest="outputs", action="append", default=[], metavar="OUT",
        help="output file: .wav for the audio that comes out, .y4m for the video; may be repeated",
    )  # fmt: skip
    parser.add_argument("--report", metavar="JSON", help="write the latency report here")
    parser.add_argument("--speed", type=float, default=1.0, help="pace relative to real time (default 1.0)")
    parser.add_argument("--params", metavar="JSON", help="per-session parameters, as a client would send them")
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to wait after end of stream")
    parser.add_argument(
        "--captions", action="append", default=[], metavar="VTT_OR_SRT",
        help="write captions (one cue an utterance: transcript and translation, timed by the input); may be repeated",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="also print partial transcripts"
    )
    parser.set_defaults(func=run)


def print_speech_event(at: float, event: dict[str, Any], partials: bool = False) -> None:
    """One line for a final transcript or a translated clause (and a partial when asked), as it comes."""
    kind = event.get("type")
    text = str(event.get("text", "")).strip()
    if not text:
        return
    if kind == "transcript" and (event.get("final") or partials):
        label = "heard" if event.get("final") else "partial"
    elif kind == "translation":
        label = "said"
    else:
        return
    print(f"  {label:<7} {at:7.2f} s ({event.get('language') or '?'}): {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from ..config import PipelineError, load_pipeline
    from ..engine.runner import ParamsError, PipelineStartError
    from ..media.source import open_source
    from ..media.wav import MediaFileError
    from ..offline import OfflineError, output_kind, run_offline, summary_lines
    from ..speech.captions import check_caption_path, write_captions
    from ..stage import StageRegistry, UnknownStageType

    def fail(message: str, code: int = 1) -> int:
        print(f"error: {message}", file=sys.stderr)
        return code

    try:
        params = json.loads(args.params) if args.params else None
        if params is not None and not isinstance(params, dict):
            return fail("--params must be a JSON object", 2)
    except json.JSONDecodeError as exc:
        return fail(f"--params is not valid JSON: {exc}", 2)
    if args.speed <= 0:
        return fail("--speed must be positive", 2)
    for path in args.captions:
        try:
            check_caption_path(path)
        except ValueError as exc:
            return fail(str(exc), 2)
    partials = getattr(args, "verbose", 0) > 0
    registry = StageRegistry()
    try:
        for output in args.outputs:
            output_kind(output)
        config = load_pipeline(args.file, registry)
        sources = [open_source(path) for path in args.inputs]
        offline = run_offline(
            config,
            registry,
            sources,
            args.outputs,
            speed=args.speed,
            params=params,
            drain_timeout=args.drain_timeout,
            on_event=lambda at, event: print_speech_event(at, event, partials),
        )
        result = asyncio.run(offline)
    except (PipelineError, MediaFileError, OfflineError) as exc:
        return fail(str(exc))
    except (ParamsError, UnknownStageType) as exc:
        return fail(f"{args.file}: {exc}", 2)
    except PipelineStartError as exc:
        return fail(f"{args.file}: {exc}")
    for line in summary_lines(result.report):
        print(line)
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(result.report, indent=2, default=str) + "\n")
        except OSError as exc:
            return fail(f"{args.report}: cannot write: {exc.strerror or exc}")
        print(f"wrote {args.report}", file=sys.stderr)
    for path in result.written:
        print(f"wrote {path}", file=sys.stderr)
    for path in args.captions:
        try:
            write_captions(path, result.captions)
        except OSError as exc:
            return fail(f"{path}: cannot write: {exc.strerror or exc}")
        print(f"wrote {path} ({len(result.captions)} captions)", file=sys.stderr)
    if result.problems:
        return fail("; ".join(result.problems))
    return 0
