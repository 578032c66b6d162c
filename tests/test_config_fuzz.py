"""Whatever text is handed to the pipeline parser, the answer is a config or one PipelineError line."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamai.config import PipelineConfig, PipelineError, parse_pipeline
from streamai.stage import StageRegistry

REGISTRY = StageRegistry()
STAGE_KEYS = [
    "type",
    "name",
    "params",
    "model",
    "device",
    "queue",
    "queue_size",
    "expected_ms",
    "budget_ms",
    "admission",
    "max_errors",
    "placement",
    "remote",
    "bogus",
]
PIPELINE_KEYS = ["name", "description", "budget_ms", "stages", "branches", "late_audio", "data_region", "extra"]
PARAM_KEYS = ["ms", "gain", "effect", "frequency_hz", "level", "mix", "blocking", "unknown"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "invert",
            "edges",
            "fifo",
            "latest",
            "cpu",
            "cuda",
            "edge",
            "remote",
            "delay",
            "echo",
            "passthrough",
            "tone",
            "video-transform",
            "nope",
            "a b",
            "x",
            "1e3",
        ]
    ),
    st.text(max_size=8),
)


def mapping(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


params = st.one_of(scalars, mapping(PARAM_KEYS, scalars))
stage_entry = st.one_of(scalars, mapping(STAGE_KEYS, st.one_of(scalars, params)))
chain = st.one_of(scalars, st.lists(stage_entry, max_size=4))
document = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    mapping(PIPELINE_KEYS, st.one_of(scalars, chain, st.dictionaries(st.text(max_size=4), chain, max_size=3))),
)


def check(text: str) -> None:
    try:
        config = parse_pipeline(text, "fuzz.yaml", REGISTRY)
    except PipelineError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml")
        assert "\n" not in message
        return
    assert isinstance(config, PipelineConfig)
    assert len(set(config.stage_names())) == len(config.stage_names())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_random_documents_give_config_or_pipeline_error(doc: Any) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document, st.integers(min_value=0, max_value=400), st.text(max_size=6))
def test_damaged_yaml_text_gives_config_or_pipeline_error(doc: Any, at: int, junk: str) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    check(text[:at] + junk + text[at + len(junk) :])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"# \n\t%@`,?1")), max_size=60))
def test_yaml_punctuation_soup_gives_config_or_pipeline_error(text: str) -> None:
    check(text)


def test_known_nasty_documents() -> None:
    for text in [
        "&a [*a]",
        "name: x\nstages: &s [*s]",
        "name: x\nstages:\n  - &e {type: echo, params: *e}",
        "a: 1\n---\nb: 2\n",
        "!!python/object:os.system {}",
        "name: x\nstages:\n  - !!binary 'not base64'",
        "\x00",
        "name: x\nbranches: {1: [{type: echo}]}",
        "name: x\nstages:\n  - {type: echo}\n  - {type: echo, name: echo0}",
    ]:
        check(text)
