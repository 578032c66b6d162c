"""Endpointing that adapts: is a hypothesis a complete phrase, and how long a pause ends a turn.

When the speaker pauses, ``asr`` decodes what it has and judges the words with
``phrase_complete``: a phrase that stops mid-way (it ends with an article, a
preposition, a conjunction, a determiner, an auxiliary or a subject pronoun; it has
no final punctuation or trails off with "..."; or it is one word that is not an
answer or a greeting such as "yes", "thanks") is *incomplete*. While the speaker
talks, ``clause_complete`` (the same rule, any clause punctuation) keeps ``asr`` from
committing a clause that Whisper closed with a comma at a pause inside a phrase
("front," before "center"). A complete phrase is committed at once (its
translation and speech start while the end is being confirmed) and ``vad`` ends the
utterance after its short ``silence_ms``; an incomplete one is held and ``vad``
waits up to ``max_silence_ms`` for the speaker to go on. The rule is lexical and
language-specific (English and Portuguese lists; other languages use punctuation
only); Whisper punctuates, so the lists matter most on fragments it closes with a
full stop ("Rear." before "left").

``turn(events)`` is the per-session meeting point of the two stages (the event bus
identifies the session, as ``streamai.speech.latency.tracker`` does): ``asr`` posts
its verdict on each pause, ``vad`` reads it on every silent window.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

FINAL_PUNCTUATION = re.compile(r"[.!?…]+[\"')\]]*$")
TRAILING_OFF = re.compile(r"(\.\.\.|…)[\"')\]]*$")
_WORD = re.compile(r"[^\w']+")


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words after which an English phrase is not finished.
_EN_OPEN = _word_set(
    """
    a an the
    of to in on at for with from by about into onto over under after before between through
    during without within like than as per via toward towards near off up upon
    and or but so because if that which who whom whose when where while although though unless until nor yet
    my your his her its our their this these those some any every each no another such what
    is are was were be been being am have has had do does did will would can could shall should may might must
    i you he she we they it i'm you're we're they're he's she's it's i'd i'll you'll we'll let's
    very more most less quite really just also not don't didn't can't won't isn't aren't
    """
)
# Portuguese.
_PT_OPEN = _word_set(
    """
    o a os as um uma uns umas
    de do da dos das em no na nos nas para pra por pelo pela pelos pelas com sem sob sobre entre até desde ao aos à às
    e ou mas porque porém que se quando onde como embora nem
    meu minha meus minhas seu sua seus suas nosso nossa este esta esse essa aquele aquela isto isso cada algum alguma
    é são foi era está estão ser estar ter tem tinha vai vou pode posso quero gostaria eu você ele ela nós eles elas
    muito mais menos não
    """
)
OPEN_ENDINGS: dict[str, frozenset[str]] = {"en": _EN_OPEN, "pt": _PT_OPEN}

# One-word turns that are complete on their own: answers, greetings, thanks.
_EN_SHORT = _word_set(
    """
    yes yeah yep no nope okay ok sure right fine great good thanks thank hello hi hey bye goodbye
    please sorry stop wait help perfect exactly absolutely maybe really cool nice done
    """
)
_PT_SHORT = _word_set("sim não ok certo claro obrigado obrigada olá oi tchau desculpa pare espera ajuda ótimo bom")
SHORT_TURNS: dict[str, frozenset[str]] = {"en": _EN_SHORT, "pt": _PT_SHORT}


def _keys(text: str) -> list[str]:
    return [w for w in (_WORD.sub("", word.lower()) for word in text.split()) if w]


def clause_complete(text: str, language: str = "en") -> bool:
    """True when ``text`` (a clause, whatever punctuation ends it) does not stop mid-phrase.

    Not complete: no words; trailing off ("..."); ending with an article, a preposition,
    a conjunction, a determiner, an auxiliary or a pronoun; one word that is not an
    answer or a greeting.
    """
    text = text.strip()
    keys = _keys(text)
    if not keys or TRAILING_OFF.search(text):
        return False
    base = language.split("-")[0].lower()
    if keys[-1] in OPEN_ENDINGS.get(base, frozenset()):
        return False
    short = SHORT_TURNS.get(base)
    return not (short is not None and len(keys) == 1 and keys[0] not in short)


def phrase_complete(text: str, language: str = "en") -> bool:
    """True when ``text`` reads as a finished phrase (final punctuation, not stopping mid-phrase),
    so a pause after it may end the turn."""
    return bool(FINAL_PUNCTUATION.search(text.strip())) and clause_complete(text, language)


@dataclass
class TurnState:
    """One session's pause verdicts: ``asr`` posts them, ``vad`` reads them."""

    listening: bool = False  # an ASR stage posts verdicts (else vad ends on silence alone)
    verdicts: dict[tuple[int, int], bool] = field(default_factory=dict)  # (utterance, pause) -> complete

    def post(self, utterance: int, pause: int, complete: bool) -> None:
        """The verdict on one pause (``pause`` numbers the tentative ends of an utterance)."""
        self.verdicts[(utterance, pause)] = complete
        for key in [k for k in self.verdicts if k[0] < utterance - 1]:
            del self.verdicts[key]

    def verdict(self, utterance: int, pause: int) -> bool | None:
        """Complete, incomplete, or ``None`` while the pause's decode is still running."""
        return self.verdicts.get((utterance, pause))


_states: weakref.WeakKeyDictionary[Any, TurnState] = weakref.WeakKeyDictionary()


def turn(events: Any) -> TurnState:
    """The turn state of an event bus (one per session)."""
    found = _states.get(events)
    if found is None:
        found = _states[events] = TurnState()
    return found
