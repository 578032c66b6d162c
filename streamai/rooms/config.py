"""Room pipelines: YAML -> typed objects, validated like every pipeline.

A room pipeline says how a room of several languages is served::

    name: conversation-en-pt
    languages: [en, pt]
    budget_ms: 600             # speaker's capture -> translated audio sent, every frame
    late_audio: play           # or drop: a clause late at its listener is not played (counted either way)
    hear:                      # per spoken language: speech -> text, run once per speaker
      en: {stages: [{type: vad, ...}, {type: asr, model: whisper-tiny-en, ...}]}
      pt: {stages: [...]}
    pairs:                     # per language pair: text -> speech in the other language, once per target
      en->pt: {stages: [{type: translate, ...}, {type: tts, ...}]}
      pt->en: {budget_ms: 700, late_audio: drop, stages: [...]}

The chain of a pair is ``hear[source]`` then ``pairs[source->target]``: a speaker is
transcribed once and translated and synthesized once per other language present.
Every ordered pair of ``languages`` must be declared; an undeclared one is an error
naming it. The room fills each stage's language params from the stage's place, where
the stage has them: ``language`` (the spoken language in ``hear``, the target in a
pair), ``source`` and ``target``; a value written in the YAML must agree. A model from
the catalog that names its languages (Whisper tiny.en, a Marian pair) must fit too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..client_params import ClientParams, ParamBounds, normalize_client_params
from ..config import (
    ConfigFolder,
    PipelineConfig,
    PipelineError,
    StageConfig,
    line_of,
    read_pipeline_file,
    stage_problem,
    yaml_document,
)
from ..stage import StageRegistry

LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"
ARROW = "->"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChainConfig(_Strict):
    """One chain of a room: its stages, and optionally its own budget and late-audio policy."""

    stages: list[StageConfig] = Field(min_length=1)
    budget_ms: float | None = Field(None, gt=0, le=60_000)
    late_audio: Literal["drop", "play"] | None = None


def pair_name(source: str, target: str) -> str:
    return f"{source}{ARROW}{target}"


class RoomPipelineConfig(_Strict):
    """A room pipeline as written in YAML (see the module docstring)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    languages: list[str] = Field(min_length=2, max_length=8)
    budget_ms: float = Field(600, gt=0, le=60_000)
    late_audio: Literal["drop", "play"] = "play"
    originals: bool = True  # others of a speaker's language hear the speaker's own voice (never the speaker)
    max_speakers: int = Field(4, ge=1, le=16)
    max_listeners: int = Field(32, ge=0, le=1000)
    max_age_s: float = Field(3600, gt=0, le=7 * 86400)
    hear: dict[str, ChainConfig]
    pairs: dict[str, ChainConfig]
    # stage name (in any chain) -> params a speaker may set, as in a pipeline's client_params
    client_params: dict[str, list[str] | dict[str, ParamBounds | None]] = Field(default_factory=dict)

    @field_validator("languages")
    @classmethod
    def _distinct_codes(cls, languages: list[str]) -> list[str]:
        import re

        for code in languages:
            if not re.match(LANGUAGE_PATTERN, code):
                raise ValueError(f"{code[:20]!r} is not a language code (like 'en' or 'pt-br')")
        repeated = sorted({code for code in languages if languages.count(code) > 1})
        if repeated:
            raise ValueError(f"languages repeated: {', '.join(repeated)}")
        return languages

    @model_validator(mode="after")
    def _every_pair(self) -> RoomPipelineConfig:
        missing = [code for code in self.languages if code not in self.hear]
        if missing:
            raise ValueError(f"no 'hear' chain for language {', '.join(missing)}")
        extra = sorted(set(self.hear) - set(self.languages))
        if extra:
            raise ValueError(f"'hear' names a language not in 'languages': {', '.join(extra)}")
        wanted = [pair_name(s, t) for s, t in itertools.permutations(self.languages, 2)]
        undeclared = [pair for pair in wanted if pair not in self.pairs]
        if undeclared:
            declared = ", ".join(self.pairs) or "none"
            raise ValueError(f"unsupported pair {', '.join(undeclared)}: no chain declared (declared: {declared})")
        unknown = [pair for pair in self.pairs if pair not in wanted]
        if unknown:
            raise ValueError(
                f"pair {', '.join(unknown)} is not a pair of {', '.join(self.languages)} (write pairs as 'en->pt')"
            )
        return self

    # -- the chains as pipelines the engine runs -------------------------------------------
    def allowed_client_params(self) -> ClientParams:
        return normalize_client_params(self.client_params)

    def hear_pipeline(self, language: str, registry: StageRegistry) -> PipelineConfig:
        """The speech -> text chain of ``language`` (one run per speaker of it)."""
        chain = self.hear[language]
        return self._pipeline(f"{self.name}-hear-{language}", chain, _place_fill(f"hear.{language}"), registry)

    def pair_pipeline(self, source: str, target: str, registry: StageRegistry) -> PipelineConfig:
        """The text -> speech chain of one pair (one run per speaker and target language)."""
        pair = pair_name(source, target)
        fill = _place_fill(f"pairs.{pair}")
        return self._pipeline(f"{self.name}-{source}-{target}", self.pairs[pair], fill, registry)

    def pair_budget_s(self, source: str, target: str) -> float:
        return (self.pairs[pair_name(source, target)].budget_ms or self.budget_ms) / 1000

    def pair_late_audio(self, source: str, target: str) -> str:
        return self.pairs[pair_name(source, target)].late_audio or self.late_audio

    def _pipeline(self, name: str, chain: ChainConfig, fill: dict[str, str], registry: StageRegistry) -> PipelineConfig:
        stages = [
            s.model_copy(update={"params": _filled(s.params, fill, registry.get(s.type).Params.model_fields)})
            for s in chain.stages
        ]
        names = {s.name or f"{s.type}{i}" for i, s in enumerate(stages)}
        allowed = {k: v for k, v in self.client_params.items() if k in names}
        return PipelineConfig(
            name=name,
            description=self.description,
            budget_ms=chain.budget_ms or self.budget_ms,
            late_audio=chain.late_audio or self.late_audio,
            stages=stages,
            client_params=allowed,
        )

    def chains(self) -> dict[str, ChainConfig]:
        """Every chain by where it is written: ``hear.en``, ``pairs.en->pt``."""
        return {**{f"hear.{k}": v for k, v in self.hear.items()}, **{f"pairs.{k}": v for k, v in self.pairs.items()}}


# The stage params a room fills from a chain's place (by name, on stages whose Params have them).
FILLED_PARAMS = ("language", "source", "target")


def _filled(params: dict[str, Any], fill: dict[str, str], fields: Any) -> dict[str, Any]:
    """``params`` with the chain's language params added where the stage has them and the YAML is silent."""
    out = dict(params)
    for name, value in fill.items():
        if name not in out and name in fields:
            out[name] = value
    return out


def _place_fill(where: str) -> dict[str, str]:
    kind, _, key = where.partition(".")
    if kind == "hear":
        return {"language": key}
    source, _, target = key.partition(ARROW)
    return {"language": target, "source": source, "target": target}


def _language_problem(where: str, stage: StageConfig, registry: StageRegistry) -> tuple[tuple[Any, ...], str] | None:
    """A stage whose written language params or catalog model disagree with the chain's place."""
    from ..models.catalog import Catalog, is_path_reference

    fill = _place_fill(where)
    fields = registry.get(stage.type).Params.model_fields
    for name, value in fill.items():
        if name in fields and name in stage.params and stage.params[name] != value:
            return ("params", name), f"is {stage.params[name]!r}, but this chain's {name} is {value!r}"
    if stage.model is None or is_path_reference(stage.model):
        return None
    entry = Catalog().entries.get(stage.model)
    if entry is None:
        return None
    pair = (entry.options or {}).get("pair")
    if entry.task == "asr" and where.startswith("hear.") and entry.languages:
        heard = fill["language"].split("-")[0]
        if "multilingual" not in entry.languages and heard not in entry.languages:
            hears = ", ".join(entry.languages)
            return ("model",), f"model {stage.model!r} hears only {hears}, not {fill['language']!r}"
    direction = f"{fill.get('source')}-{fill.get('target')}"
    if entry.task == "mt" and pair and where.startswith("pairs.") and pair != direction:
        return ("model",), f"model {stage.model!r} translates {pair}, not {fill['source']}->{fill['target']}"
    return None


def _client_params_problem(config: RoomPipelineConfig, registry: StageRegistry) -> tuple[tuple[Any, ...], str] | None:
    stages: dict[str, StageConfig] = {}
    for chain in config.chains().values():
        for index, stage in enumerate(chain.stages):
            stages.setdefault(stage.name or f"{stage.type}{index}", stage)
    for name, fields in config.allowed_client_params().items():
        if name not in stages:
            return ("client_params", name), f"no stage named {name!r} in any chain (stages: {', '.join(stages)})"
        cls = registry.get(stages[name].type)
        for field in fields:
            if field in FILLED_PARAMS:
                return ("client_params", name, field), f"{field!r} is set by the room from the chain's languages"
            if field not in cls.client_settable:
                settable = ", ".join(sorted(cls.client_settable)) or "none"
                return (
                    ("client_params", name, field),
                    f"stage type {cls.type_name!r} never lets clients set {field!r} (it allows: {settable})",
                )
    return None


def _describe(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """'pairs 'en->pt' stage 2 "tts" (tts), field params.language' from a location."""
    if len(loc) >= 4 and loc[0] in ("hear", "pairs") and loc[2] == "stages" and isinstance(loc[3], int):
        chain = ((raw.get(loc[0]) or {}).get(loc[1]) or {}).get("stages") or []
        entry = chain[loc[3]] if isinstance(chain, list) and loc[3] < len(chain) else {}
        label = f"{'pair' if loc[0] == 'pairs' else 'hear'} {loc[1]!r} stage {loc[3] + 1}"
        if isinstance(entry, dict):
            if entry.get("name"):
                label += f" {entry['name']!r}"
            if entry.get("type"):
                label += f" ({entry['type']})"
        rest = loc[4:]
        return label + (", field " + ".".join(map(str, rest)) if rest else "")
    return "field " + ".".join(map(str, loc)) if loc else "room pipeline"


def parse_room_pipeline(text: str, source: str, registry: StageRegistry | None = None) -> RoomPipelineConfig:
    """Parse and validate room pipeline YAML; ``registry`` also validates every chain's stages."""
    node, raw = yaml_document(text, source)
    if not isinstance(raw, dict):
        raise PipelineError(source, "a room pipeline must be a YAML mapping with 'name', 'languages', 'hear', 'pairs'")

    def fail(loc: tuple[Any, ...], message: str) -> PipelineError:
        line = line_of(node, loc)
        return PipelineError(f"{source}:{line}" if line else source, f"{_describe(loc, raw)}: {message}")

    try:
        config = RoomPipelineConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc, message = tuple(first["loc"]), first["msg"]
        if first["type"] == "missing":
            message, loc = f"missing required field {loc[-1]!r}", loc[:-1]
        elif first["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        raise fail(loc, message) from None
    if registry is not None:
        for where, chain in config.chains().items():
            kind, _, key = where.partition(".")
            for index, stage in enumerate(chain.stages):
                at = (kind, key, "stages", index)
                problem = stage_problem(stage, registry) or _language_problem(where, stage, registry)
                if problem is not None:
                    raise fail((*at, *problem[0]), problem[1])
            names = [s.name or f"{s.type}{i}" for i, s in enumerate(chain.stages)]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise fail((kind, key), f"stage names must be unique in a chain: {', '.join(duplicated)}")
        problem = _client_params_problem(config, registry)
        if problem is not None:
            raise fail(*problem)
    return config


def is_room_pipeline(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` is written as a room pipeline (it has ``pairs`` or ``hear``)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the pipeline loader reports it
    return isinstance(raw, dict) and ("pairs" in raw or "hear" in raw)


def load_room_pipeline(path: str | Path, registry: StageRegistry | None = None) -> RoomPipelineConfig:
    """Read and validate a room pipeline YAML file."""
    path = Path(path)
    return parse_room_pipeline(read_pipeline_file(path), str(path), registry)


class RoomPipelineLibrary(ConfigFolder[RoomPipelineConfig]):
    """The room pipelines a node offers: every ``*.yaml`` in a folder, by name."""

    def __init__(self, folder: str | Path, registry: StageRegistry) -> None:
        super().__init__(folder, registry, load_room_pipeline)
