"""Text helpers of streaming speech: words, local agreement, clause splitting, word error rate."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

CLAUSE_END = re.compile(r"[,.;:!?…]+[\"')\]]*$")
_NORMALIZE = re.compile(r"[^\w\s']")


def words(text: str) -> list[str]:
    """Whitespace-separated words, punctuation kept on them."""
    return text.split()


def extend(committed: list[str], new: list[str]) -> list[str]:
    """``committed + new``, gluing punctuation that starts ``new`` (", where") onto the last word."""
    out = list(committed)
    for word in new:
        if out and not _key(word):
            out[-1] += word
        else:
            out.append(word)
    return out


def _key(word: str) -> str:
    return _NORMALIZE.sub("", word.lower())


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading words two consecutive hypotheses share (ignoring case and punctuation)."""
    count = 0
    for a, b in zip(previous, current, strict=False):
        if _key(a) != _key(b) or not _key(a):
            break
        count += 1
    return count


def clause_cut(hypothesis: list[str], agreed: int, accept: Callable[[str], bool] | None = None) -> int:
    """Shorten an agreed word count to end at the last clause end (0 when none).

    ``accept`` judges the clause that would end there (its words since the clause end
    before it); a clause it refuses (a pause Whisper marked with a comma after a
    fragment: "front," before "center") is not an end to commit at.
    """
    for index in range(agreed, 0, -1):
        if not CLAUSE_END.search(hypothesis[index - 1]):
            continue
        if accept is None:
            return index
        start = max((i + 1 for i in range(index - 1) if CLAUSE_END.search(hypothesis[i])), default=0)
        if accept(" ".join(hypothesis[start:index])):
            return index
    return 0


def local_agreement(
    committed: list[str],
    tail: list[str],
    hypothesis: list[str],
    *,
    pause: bool = False,
    commit: Literal["clause", "word"] = "clause",
    accept: Callable[[str], bool] | None = None,
) -> tuple[list[str], list[str]]:
    """One step of local agreement: ``(committed, tail)`` after a new hypothesis.

    ``hypothesis`` holds the words decoded *after* the committed ones (the decoder is
    forced through them); ``tail`` is the uncommitted rest of the previous hypothesis.
    The words the two agree on from the start are committed, by default only up to the
    last clause end among them (``commit="clause"``) whose clause ``accept`` takes (default:
    any); the rest is held back as the new tail. ``pause`` (the speaker stopped) commits the
    whole hypothesis. Punctuation that starts a hypothesis (", where") is glued onto the last committed word.
    """
    if committed and hypothesis and not any(c.isalnum() for c in hypothesis[0]):
        committed = extend(committed, hypothesis[:1])
        hypothesis = hypothesis[1:]
    agreed = agreed_prefix(tail, hypothesis)
    if pause:
        agreed = len(hypothesis)
    elif commit == "clause":
        agreed = clause_cut(hypothesis, agreed, accept)
    return [*committed, *hypothesis[:agreed]], hypothesis[agreed:]


def split_clauses(text: str) -> tuple[list[str], str]:
    """Complete clauses (ending with , . ; : ! ?) and the unfinished rest."""
    clauses: list[str] = []
    current: list[str] = []
    for word in words(text):
        current.append(word)
        if CLAUSE_END.search(word):
            clauses.append(" ".join(current))
            current = []
    return clauses, " ".join(current)


def short_head(pieces: list[str], first_words: int) -> list[str]:
    """Split ``first_words`` words off the first piece when it has at least two more than that.

    TTS makes a piece at once, so a short first piece is heard sooner; the rest follows
    while it plays. ``first_words`` 0 leaves the pieces as they are.
    """
    if not pieces or first_words <= 0:
        return pieces
    head = words(pieces[0])
    if len(head) < first_words + 2:
        return pieces
    return [" ".join(head[:first_words]), " ".join(head[first_words:]), *pieces[1:]]


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation, for scoring."""
    return [w for w in (_key(w) for w in text.replace("-", " ").split()) if w]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (jiwer) over normalized words: lower case, no punctuation, hyphens split."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return float(bool(hyp))
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))
