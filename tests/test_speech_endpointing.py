"""Endpointing that adapts: the phrase rule, the per-session verdicts, the decode gate's priority,
and the release-on-arrival audio jitter buffer. Deterministic: no model, no wall-clock bound."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from streamai.events import EventBus
from streamai.speech.audio import trim_leading_silence
from streamai.speech.decode_gate import DecodeGate
from streamai.speech.turn import TurnState, phrase_complete, turn
from streamai.transport.ice import ReleaseOnArrival


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("Where is the train station?", True),
        ("I would like a cup of coffee, please.", True),
        ("Rear left.", True),
        ("Thanks.", True),  # a one-word answer is a turn
        ("Yes!", True),
        ("Rear.", False),  # one word that is not an answer: a fragment, even with Whisper's full stop
        ("I would like a.", False),  # ends with an article
        ("I am looking for.", False),  # a preposition
        ("Coffee and.", False),  # a conjunction
        ("The weather is.", False),  # an auxiliary
        ("where is the train station", False),  # no final punctuation
        ("Good morning,", False),  # a clause, not a sentence end
        ("", False),
        ("...", False),
    ],
)
def test_phrase_rule(text: str, complete: bool) -> None:
    assert phrase_complete(text, "en") is complete


def test_phrase_rule_knows_portuguese_and_falls_back_to_punctuation_elsewhere() -> None:
    assert phrase_complete("Onde fica a estação?", "pt")
    assert not phrase_complete("Eu gostaria de uma.", "pt")
    assert phrase_complete("Ich möchte einen.", "de")  # no word list for German: punctuation only
    assert not phrase_complete("Ich möchte einen", "de")


def test_verdicts_are_per_utterance_and_pause_and_old_ones_are_forgotten() -> None:
    state = TurnState()
    state.post(1, 1, False)
    state.post(1, 2, True)
    assert state.verdict(1, 1) is False and state.verdict(1, 2) is True
    assert state.verdict(1, 3) is None  # that pause's decode has not answered yet
    state.post(4, 1, True)
    assert state.verdict(1, 2) is None  # utterances far behind are dropped
    bus = EventBus()
    assert turn(bus) is turn(bus) and turn(bus) is not turn(EventBus())


def test_an_urgent_decode_goes_ahead_of_waiting_partials() -> None:
    gate = DecodeGate()
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with gate.hold(urgent=False):
            holding.set()
            release.wait(5)
            order.append("first")

    def run(name: str, urgent: bool, ready: threading.Event) -> None:
        ready.set()
        with gate.hold(urgent=urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(5)
    assert gate.busy()
    threads = []
    for name, urgent in (("partial", False), ("urgent", True)):
        ready = threading.Event()
        thread = threading.Thread(target=run, args=(name, urgent, ready))
        thread.start()
        assert ready.wait(5)
        threads.append(thread)
    # both wait behind the holder; give them a moment to block on the gate, then let it go
    for _ in range(2000):
        if gate._urgent_waiting == 1 and gate.partial_waits == 1:
            break
        threading.Event().wait(0.005)
    release.set()
    for thread in [first, *threads]:
        thread.join(5)
    assert order == ["first", "urgent", "partial"]
    assert not gate.busy() and gate.urgent_waits == 1 and gate.partial_waits == 1


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
    packet._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return packet


def test_with_two_workers_an_urgent_decode_never_waits_behind_a_partial() -> None:
    """Two slots: a partial holds one, a second partial must wait (busy), an urgent decode starts at once."""
    gate = DecodeGate(capacity=2)
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def partial(name: str) -> None:
        with gate.hold(urgent=False):
            order.append(name)
            holding.set()
            release.wait(5)

    first = threading.Thread(target=partial, args=("partial 1",))
    first.start()
    assert holding.wait(5) and gate.busy()  # partials may not take the last slot
    second = threading.Thread(target=partial, args=("partial 2",))
    second.start()
    for _ in range(2000):
        if gate.partial_waits == 1:
            break
        threading.Event().wait(0.005)
    assert gate.partial_waits == 1
    with gate.hold(urgent=True):  # returns at once: the reserved slot
        order.append("urgent")
    assert gate.urgent_waits == 0
    release.set()
    for thread in (first, second):
        thread.join(5)
    assert order == ["partial 1", "urgent", "partial 2"] and not gate.busy()


@pytest.mark.models
async def test_asr_workers_reach_the_shared_model_and_its_gate() -> None:
    from streamai.config import parse_pipeline
    from streamai.engine import CollectingSink, PipelineRunner
    from streamai.models import SharedModels
    from streamai.stage import StageRegistry

    registry = StageRegistry()
    yaml = "name: a\nstages:\n  - {name: asr, type: asr, model: whisper-tiny-en, params: {threads: 1, workers: 2}}\n"
    models = SharedModels()
    runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink(), resources=models)
    await runner.start()
    try:
        stage = runner.stage_runners[0].stage
        for transcriber in (stage.transcriber, stage.final_transcriber):
            assert transcriber.gate.capacity == 2 and transcriber.decoder.model.num_workers == 2
        assert stage.transcriber.gate is stage.final_transcriber.gate  # one model, one gate
        assert "asr:whisper-tiny-en:cpu:1:w2" in models.loaded()
    finally:
        await runner.stop()


def test_audio_packets_are_released_on_arrival_and_a_late_one_is_dropped() -> None:
    buffer = ReleaseOnArrival(capacity=16)
    released = [buffer.add(_packet(seq))[1] for seq in (100, 101, 103)]
    assert [f.timestamp for f in released if f is not None] == [96000, 96960, 98880]  # none waits for the next
    assert buffer.add(_packet(102))[1] is None  # reordered behind one already played
    assert buffer.add(_packet(104))[1] is not None
    wrapped = ReleaseOnArrival(capacity=16)
    assert wrapped.add(_packet(65535))[1] is not None and wrapped.add(_packet(0))[1] is not None  # seq wraps


def test_leading_silence_is_trimmed_to_a_few_ms_before_the_first_audible_sample() -> None:
    rate = 22050
    audio = np.concatenate([np.zeros(1000, np.int16), np.full(10, 50, np.int16), np.full(500, 9000, np.int16)])
    trimmed = trim_leading_silence(audio, rate, keep_ms=5)
    keep = int(rate * 0.005)
    assert len(trimmed) == len(audio) - (1010 - keep)
    assert np.abs(trimmed[keep:]).min() == 9000
    silent = np.zeros(100, np.int16)
    assert trim_leading_silence(silent, rate) is silent


def test_a_comma_after_a_fragment_is_no_clause_end_to_commit_at() -> None:
    from streamai.speech.text import clause_cut, local_agreement, words
    from streamai.speech.turn import clause_complete

    assert clause_complete("good morning,") and not clause_complete("front,") and not clause_complete("coffee and...")
    hypothesis = words("front, center and more")
    assert clause_cut(hypothesis, 3) == 1  # without a judge: "front," is a clause end
    assert clause_cut(hypothesis, 3, clause_complete) == 0  # with one: a fragment, commit nothing
    said = words("good morning, where is the train station")
    assert clause_cut(said, 6, clause_complete) == 2  # "good morning," is a real clause
    committed, tail = local_agreement([], words("front, center"), words("front, center."), accept=clause_complete)
    assert committed == [] and tail == words("front, center.")
    assert not phrase_complete("Front...") and phrase_complete("We're... Right.")
