"""Local agreement, the rule that decides which streaming-ASR words are committed: unit tests on
sequences of hypotheses in which unstable words must be held back and stable ones committed."""

from __future__ import annotations

import pytest

from streamai.speech.text import agreed_prefix, clause_cut, local_agreement, words


def test_agreed_prefix_ignores_case_and_punctuation_and_stops_at_the_first_difference() -> None:
    assert agreed_prefix(words("Good morning where"), words("good morning, where is")) == 3
    assert agreed_prefix(words("the quick brown fox"), words("the quick ground fox")) == 2  # fox agrees, too late
    assert agreed_prefix(words("hello"), words("")) == 0
    assert agreed_prefix([], words("hello there")) == 0  # a first hypothesis agrees with nothing
    assert agreed_prefix(["-", "so"], ["-", "so"]) == 0  # a word of punctuation only is never agreement


def test_clause_cut_shortens_to_the_last_clause_end() -> None:
    hypothesis = words("good morning, where is the train station? I would")
    assert clause_cut(hypothesis, 9) == 7  # "... station?" ends the last clause among the 9 agreed words
    assert clause_cut(hypothesis, 6) == 2  # "good morning,"
    assert clause_cut(hypothesis, 1) == 0  # no clause end yet: commit nothing
    assert clause_cut(words('he said "yes." then'), 3) == 3  # a closing quote after the stop


def _stream(full_hypotheses: list[str], commit: str) -> list[tuple[list[str], list[str]]]:
    """Run local agreement as the ASR stage does: each decode is forced through the committed
    words, so the new hypothesis is what the decoder says after them."""
    committed: list[str] = []
    tail: list[str] = []
    states = []
    for full in full_hypotheses:
        said = words(full)
        assert [w.lower() for w in said[: len(committed)]] == [w.lower() for w in committed], "prefix is forced"
        committed, tail = local_agreement(committed, tail, said[len(committed) :], commit=commit)  # type: ignore[arg-type]
        states.append((committed, tail))
    return states


HYPOTHESES = [
    "The quick brown",
    "The quick ground fox",  # "brown" flickers to "ground": unstable
    "The quick brown fox jumps, over",
    "The quick brown fox jumps, over the lazy dog.",
    "The quick brown fox jumps, over the lazy dog. And",
]


def test_word_commits_hold_back_a_flickering_word_and_commit_what_two_hypotheses_share() -> None:
    states = _stream(HYPOTHESES, "word")
    committed = [" ".join(c) for c, _ in states]
    assert committed == [
        "",  # nothing to agree with yet
        "The quick",  # "brown"/"ground" disagree: held back, with all after it
        "The quick",  # "ground fox" vs "brown fox jumps, over": the first word already differs
        "The quick brown fox jumps, over",
        "The quick brown fox jumps, over the lazy dog.",
    ]
    assert all("ground" not in c for c, _ in states)  # the unstable guess was never committed
    assert " ".join(states[1][1]) == "ground fox"  # ... only shown as the uncommitted tail
    assert " ".join(states[-1][1]) == "And"


def test_clause_commits_wait_for_an_agreed_clause_end() -> None:
    states = _stream(HYPOTHESES, "clause")
    committed = [" ".join(c) for c, _ in states]
    assert committed == [
        "",
        "",  # "The quick" agreed, but no clause ends inside it
        "",  # the tail still held "ground": only "The quick" agreed
        "The quick brown fox jumps,",  # agreed through "over"; cut back to the comma
        "The quick brown fox jumps, over the lazy dog.",
    ]
    for committed_words, tail in states:  # what is shown is always the newest hypothesis
        assert " ".join([*committed_words, *tail]) in HYPOTHESES


def test_a_pause_commits_the_whole_hypothesis_and_punctuation_glues_onto_the_last_word() -> None:
    committed, tail = local_agreement(words("good morning"), words("where is the"), words("where is a"), pause=True)
    assert (committed, tail) == (words("good morning where is a"), [])  # the speaker stopped: nothing will change
    committed, tail = local_agreement(words("good morning"), [], words(", where is"))
    assert committed == ["good", "morning,"] and tail == words("where is")


@pytest.mark.parametrize("commit", ["word", "clause"])
def test_a_hypothesis_that_changes_every_time_commits_nothing(commit: str) -> None:
    committed: list[str] = []
    tail: list[str] = []
    for guess in ["I scream,", "ice cream,", "I scream,", "ice cream,"]:
        committed, tail = local_agreement(committed, tail, words(guess), commit=commit)  # type: ignore[arg-type]
    assert committed == [] and tail == words("ice cream,")


def test_word_error_rate_counts_edits_over_normalized_words() -> None:
    from streamai.speech.text import word_error_rate

    reference = "The quick brown fox jumps over the lazy dog."
    assert word_error_rate(reference, "the QUICK brown fox, jumps over the lazy dog") == 0  # case and punctuation
    assert word_error_rate(reference, "The quick ground fog stump over the lazy dog.") == pytest.approx(3 / 9)
    assert word_error_rate("a b c d", "a c d e f") == pytest.approx(3 / 4)  # 1 deletion + 2 insertions
    assert word_error_rate("good-morning", "good morning") == 0
    assert (word_error_rate("", ""), word_error_rate("", "x")) == (0.0, 1.0)
