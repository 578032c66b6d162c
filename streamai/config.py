"""Pipeline YAML -> typed objects, with errors that name the file, the stage and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .client_params import ClientParams, ParamBounds, normalize_client_params
from .stage import StageRegistry, UnknownStageType

QueuePolicy = Literal["latest", "fifo"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(Strict):
    """Replica autoscaling of a remote stage (Ray Serve ``autoscaling_config``)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)


class RemoteConfig(Strict):
    """Where and how a stage runs when it is not in-process on the edge node."""

    resources: dict[str, float] = Field(default_factory=dict)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    fallback: Literal["drop", "edge"] = "drop"


class StageConfig(Strict):
    """One stage of a pipeline as written in YAML."""

    type: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    queue: QueuePolicy | None = None
    queue_size: int = Field(16, ge=1, le=10_000)
    expected_ms: float | None = Field(None, ge=0)
    budget_ms: float | None = Field(None, gt=0)
    admission: Literal["frame", "stream"] | None = None
    max_errors: int = Field(20, ge=1)
    placement: Literal["edge", "remote", "auto"] = "edge"
    remote: RemoteConfig | None = None
    # quality ladder: parameter overrides to step down to, in order, when a frame would miss its
    # deadline at the configured quality (see streamai/engine/ladder.py); empty: drop (strict)
    degrade: list[dict[str, Any]] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _degrade_on_edge(self) -> StageConfig:
        if self.degrade and self.placement != "edge":
            raise ValueError("'degrade' needs placement: edge (a remote replica keeps its own parameters)")
        return self


class PipelineConfig(Strict):
    """A whole pipeline: one chain (``stages``) or named branches fed by the same input."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    budget_ms: float = Field(500, gt=0, le=60_000)
    stages: list[StageConfig] | None = None
    branches: dict[str, list[StageConfig]] | None = None
    late_audio: Literal["drop", "play"] = "drop"
    data_region: Literal["any", "preferred", "required"] = "any"
    region_models: dict[str, dict[str, str]] = Field(default_factory=dict)
    # stage name -> params a client may set (a list, or a mapping to bounds); none when absent
    client_params: dict[str, list[str] | dict[str, ParamBounds | None]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_shape(self) -> PipelineConfig:
        if (self.stages is None) == (self.branches is None):
            raise ValueError("give exactly one of 'stages' (a chain) or 'branches' (fan-out)")
        if self.stages is not None and not self.stages:
            raise ValueError("'stages' is empty")
        if self.branches is not None and not all(self.branches.values()):
            raise ValueError("every branch needs at least one stage")
        return self

    def allowed_client_params(self) -> ClientParams:
        """``client_params`` in one shape: stage -> param -> bounds."""
        return normalize_client_params(self.client_params)

    def chains(self) -> dict[str, list[StageConfig]]:
        """The branches, a plain chain being one branch called ``main``."""
        return {"main": self.stages} if self.stages is not None else dict(self.branches or {})

    def stage_names(self) -> list[str]:
        return [stage_name(c, i, b) for b, chain in self.chains().items() for i, c in enumerate(chain)]


def stage_name(config: StageConfig, index: int, branch: str = "main") -> str:
    base = config.name or f"{config.type}{index}"
    return base if branch == "main" else f"{branch}.{base}"


class PipelineError(ValueError):
    """A pipeline that cannot be used; ``str()`` is one line naming file, stage and field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``path`` (keys and list indexes), as deep as it goes."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _describe(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """'stage 2 "invert" (video-transform), field params.effect' from a validation location."""
    if len(loc) >= 2 and loc[0] in ("stages", "branches"):
        if loc[0] == "stages" and isinstance(loc[1], int):
            index, rest, chain = loc[1], loc[2:], raw.get("stages") or []
            label = f"stage {index + 1}"
        elif loc[0] == "branches" and len(loc) >= 3 and isinstance(loc[2], int):
            index, rest = loc[2], loc[3:]
            chain = (raw.get("branches") or {}).get(loc[1]) or []
            label = f"branch {loc[1]!r} stage {index + 1}"
        else:
            return "field " + ".".join(map(str, loc))
        entry = chain[index] if isinstance(chain, list) and index < len(chain) else {}
        if isinstance(entry, dict):
            if entry.get("name"):
                label += f" {entry['name']!r}"
            if entry.get("type"):
                label += f" ({entry['type']})"
        return label + (", field " + ".".join(map(str, rest)) if rest else "")
    return "field " + ".".join(map(str, loc)) if loc else "pipeline"


MAX_YAML_NODES = 10_000  # a pipeline is a few hundred values; aliases must not multiply that


def _expanded_size(root: yaml.Node | None) -> int:
    """How many values ``root`` holds once every alias is expanded (counted once a node, in linear time)."""
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # a node met again inside itself is a cycle: infinitely large
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in open_nodes:
            return 10 * MAX_YAML_NODES
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if children_done or not children:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 0) for c in children), 10 * MAX_YAML_NODES)
            open_nodes.discard(id(node))
        else:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def yaml_document(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree (for line numbers) and the plain value of ``text``; ``PipelineError`` for bad YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        expanded = _expanded_size(node)
        if expanded > MAX_YAML_NODES:
            raise PipelineError(
                source, f"the YAML expands to over {MAX_YAML_NODES} values through its aliases (an alias bomb?)"
            )
        return node, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PipelineError(where, f"invalid YAML: {problem}") from None


def parse_pipeline(text: str, source: str, registry: StageRegistry | None = None) -> PipelineConfig:
    """Parse and validate pipeline YAML text; ``registry`` also validates stage types and params."""
    node, raw = yaml_document(text, source)
    if not isinstance(raw, dict):
        raise PipelineError(source, "a pipeline must be a YAML mapping with 'name' and 'stages'")

    def fail(loc: tuple[Any, ...], message: str) -> PipelineError:
        line = line_of(node, loc)
        where = f"{source}:{line}" if line else source
        return PipelineError(where, f"{_describe(loc, raw)}: {message}")

    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        message = first["msg"]
        if first["type"] == "missing":
            message = f"missing required field {loc[-1]!r}" if loc else "missing field"
            loc = loc[:-1]
        elif first["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        raise fail(loc, message) from None

    if registry is not None:
        for branch, chain in config.chains().items():
            prefix: tuple[Any, ...] = ("stages",) if config.stages is not None else ("branches", branch)
            for index, stage_config in enumerate(chain):
                problem_in_stage = stage_problem(stage_config, registry)
                if problem_in_stage is not None:
                    raise fail((*prefix, index, *problem_in_stage[0]), problem_in_stage[1])
        problem_at = _client_params_problem(config, registry)
        if problem_at is not None:
            raise fail(*problem_at)
        for region, overrides in config.region_models.items():
            for stage, model in overrides.items():
                problem = _unknown_model(model)
                if problem:
                    raise fail(("region_models", region, stage), problem)
    names = config.stage_names()
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PipelineError(source, f"stage names must be unique: {', '.join(duplicated)}")
    return config


def stage_problem(stage_config: StageConfig, registry: StageRegistry) -> tuple[tuple[Any, ...], str] | None:
    """Where (inside the stage) and why one stage cannot run: an unknown type, bad params, an unknown model."""
    try:
        cls = registry.get(stage_config.type)
    except UnknownStageType as exc:
        return ("type",), str(exc)
    try:
        cls.Params.model_validate(stage_config.params)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_loc = tuple(first["loc"])
        if first["type"] == "missing":
            message = f"missing required parameter {'.'.join(map(str, field_loc))!r}"
        elif first["type"] == "extra_forbidden":
            message = f"unknown parameter {'.'.join(map(str, field_loc))!r}"
        else:
            message = first["msg"]
        return ("params", *field_loc), message
    for level, overrides in enumerate(stage_config.degrade):
        try:
            cls.Params.model_validate({**stage_config.params, **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            field_loc = tuple(first["loc"])
            message = first["msg"]
            if first["type"] == "extra_forbidden":
                message = f"unknown parameter {field_loc[-1]!r}"
            return ("degrade", level, *field_loc), message
    if stage_config.model is not None:
        problem = _unknown_model(stage_config.model)
        if problem:
            return ("model",), problem
    return None


def _client_params_problem(config: PipelineConfig, registry: StageRegistry) -> tuple[tuple[Any, ...], str] | None:
    """Where and why ``client_params`` names a stage or param clients may not set, or None."""
    stages = {stage_name(c, i, b): c for b, chain in config.chains().items() for i, c in enumerate(chain)}
    for stage, fields in config.allowed_client_params().items():
        if stage not in stages:
            return ("client_params", stage), f"no stage named {stage!r} (stages: {', '.join(stages)})"
        cls = registry.get(stages[stage].type)
        for name in fields:
            if name not in cls.Params.model_fields:
                return ("client_params", stage, name), f"stage {stage!r} ({cls.type_name}) has no parameter {name!r}"
            if name not in cls.client_settable:
                settable = ", ".join(sorted(cls.client_settable)) or "none"
                return (
                    ("client_params", stage, name),
                    f"stage type {cls.type_name!r} never lets clients set {name!r} (it allows: {settable})",
                )
    return None


def _unknown_model(reference: str) -> str | None:
    """Why a model reference names no catalog entry (local paths are checked when loaded), or None."""
    from .models.catalog import Catalog, is_path_reference

    if is_path_reference(reference):
        return None
    catalog = Catalog()
    if reference in catalog.entries:
        return None
    return f"unknown model {reference!r}: not in the model catalog ({catalog.path.name}) and not a path"


def read_pipeline_file(path: Path) -> str:
    """A pipeline file's text, or a PipelineError that says why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PipelineError(str(path), "not UTF-8 text") from None


def load_pipeline(path: str | Path, registry: StageRegistry | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    path = Path(path)
    return parse_pipeline(read_pipeline_file(path), str(path), registry)


class NamedConfig(Protocol):
    name: str


ConfigT = TypeVar("ConfigT", bound=NamedConfig)


class ConfigFolder(Generic[ConfigT]):
    """Every ``*.yaml`` in a folder, validated by ``load`` and kept by name; a file that
    fails keeps its reason in ``errors`` (a missing folder is an empty library)."""

    def __init__(
        self, folder: str | Path, registry: StageRegistry, load: Callable[[Path, StageRegistry], ConfigT]
    ) -> None:
        self.folder = Path(folder)
        self.registry = registry
        self._load = load
        self.pipelines: dict[str, ConfigT] = {}
        self.errors: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        self.pipelines.clear()
        self.errors.clear()
        for path in sorted(self.folder.glob("*.yaml")) if self.folder.is_dir() else []:
            try:
                config = self._load(path, self.registry)
            except PipelineError as exc:
                self.errors[path.name] = str(exc)
                continue
            self.pipelines[config.name] = config

    def get(self, name: str) -> ConfigT | None:
        return self.pipelines.get(name)


class PipelineLibrary(ConfigFolder[PipelineConfig]):
    """The pipelines a node offers: every ``*.yaml`` in a folder, by name."""

    def __init__(self, folder: str | Path, registry: StageRegistry) -> None:
        super().__init__(folder, registry, load_pipeline)
