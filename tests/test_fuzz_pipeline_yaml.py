"""Pipeline YAML and per-session params, fuzzed where the node uses them (the parser alone is fuzzed
in test_config_fuzz.py): a folder of damaged files never stops the node loading the good ones, and
params from a client either build a pipeline or raise ``ParamsError``, never anything else."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamai.config import PipelineError, PipelineLibrary, load_pipeline
from streamai.engine import ParamsError, PipelineRunner, split_session_params
from streamai.engine.runner import CollectingSink
from streamai.stage import StageRegistry
from streamai.testing.artifacts import record_fuzz_counts

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = StageRegistry()
GOOD = sorted((ROOT / "pipelines").glob("*.yaml"))
TRIED: Counter[str] = Counter()
CONFIGS: dict[Path, Any] = {}

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)


@pytest.fixture(scope="module", autouse=True)
def record_counts() -> Any:
    yield
    record_fuzz_counts("yaml", TRIED)


@st.composite
def damaged(draw: st.DrawFn) -> str:
    """A real pipeline file with a few characters replaced, lines dropped or values swapped."""
    text = draw(st.sampled_from(GOOD)).read_text(encoding="utf-8")
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "chars", "value", "indent"]))
        if how == "drop":
            lines.pop(at)
        elif how == "chars":
            cut = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + draw(st.text(max_size=4)) + lines[at][cut + 1 :]
        elif how == "value" and ":" in lines[at]:
            key = lines[at].split(":", 1)[0]
            lines[at] = f"{key}: {json.dumps(draw(values))}"
        else:
            lines[at] = " " * draw(st.integers(0, 5)) + lines[at].lstrip()
        if not lines:
            break
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(damaged(), min_size=1, max_size=4))
def test_a_folder_of_damaged_pipelines_still_loads_the_good_ones(tmp_path_factory: Any, files: list[str]) -> None:
    folder = tmp_path_factory.mktemp("pipelines")
    for index, text in enumerate(files):
        (folder / f"bad{index}.yaml").write_text(text, encoding="utf-8")
    (folder / "good.yaml").write_text("name: zz-good\nstages:\n  - {type: passthrough}\n", encoding="utf-8")
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00name: x")
    library = PipelineLibrary(folder, REGISTRY)
    TRIED["damaged_files"] += len(files) + 1
    assert "zz-good" in library.pipelines
    assert "binary.yaml" in library.errors
    for problem in library.errors.values():
        assert "\n" not in problem and "Traceback" not in problem
    for path in folder.glob("*.yaml"):
        try:
            load_pipeline(path, REGISTRY)
        except PipelineError as exc:
            assert str(exc).startswith(str(path))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([p for p in GOOD if "avatar" not in p.name]), st.dictionaries(st.text(max_size=10), values))
def test_session_params_build_a_pipeline_or_raise_params_error(path: Path, params: dict[str, Any]) -> None:
    config = CONFIGS.setdefault(path, load_pipeline(path, REGISTRY))
    names = config.stage_names()
    if params and names:  # aim some keys at real stage names too
        params[names[0]] = params.pop(next(iter(params)))
    TRIED["session_params"] += 1
    try:
        PipelineRunner(config, REGISTRY, CollectingSink(), params=split_session_params(params, names))
    except ParamsError as exc:
        assert str(exc)  # client keys are echoed back as sent (JSON-escaped in the HTTP answer)


def test_a_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Aliases that expand to ~10^13 values (or a cycle) are refused by name, at once, before any traversal."""
    levels = 20
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(levels)
    )
    # the bomb inside a stage's params, where a stage would walk it, and as a self-referencing cycle
    inside = bomb + f"name: bomb\nstages: [{{type: passthrough, params: {{x: *{chr(97 + levels)}}}}}]\n"
    cycle = "c: &c [*c]\nname: cycle\nstages: [{type: passthrough, params: {x: *c}}]\n"
    for name, text in (("bomb.yaml", inside), ("cycle.yaml", cycle)):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        TRIED["bomb"] += 1
        started = time.perf_counter()
        with pytest.raises(PipelineError) as refused:
            load_pipeline(path, REGISTRY)
        assert time.perf_counter() - started < 1.0
        assert str(refused.value).startswith(str(path)) and "alias" in str(refused.value)
    # a modest anchor is still fine
    shared = "name: anchors-ok\nstages:\n  - {type: video-transform, params: &p {effect: invert}}\n"
    shared += "  - {type: video-transform, name: again, params: *p}\n"
    (tmp_path / "ok.yaml").write_text(shared, encoding="utf-8")
    assert load_pipeline(tmp_path / "ok.yaml", REGISTRY).stage_names() == ["video-transform0", "again"]
