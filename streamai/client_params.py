"""Which stage params a client may set, within which bounds: the pipeline's allowlist, enforced.

A pipeline's YAML is written by the operator and trusted; a client's session params and
``params`` control messages are not. A pipeline declares what clients may set::

    client_params:
      diffusion:
        prompt: {max_length: 500}
        strength: {min: 0.2, max: 0.9}
      invert: [effect]            # a list: the stage's own validation is bound enough

Everything else is the operator's: filesystem paths, engines, devices, thread counts and
model ids are never client-settable, because a stage lists what it lets clients touch at
all (``Stage.client_settable``) and the pipeline may only pick from that list. Errors name
the parameter, never echo its value.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ClientError


class ParamBounds(BaseModel):
    """Bounds a pipeline puts on one client-settable param, on top of the stage's own validation."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(None, ge=0, le=100_000)  # strings and lists
    choices: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ParamBounds:
        for value in (self.min, self.max):
            if value is not None and not math.isfinite(value):
                raise ValueError("bounds must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


ClientParams = dict[str, dict[str, ParamBounds]]  # stage name -> param -> bounds


def normalize_client_params(raw: dict[str, Any]) -> ClientParams:
    """The YAML's ``client_params`` (a list or a mapping of bounds per stage) in one shape."""
    result: ClientParams = {}
    for stage, fields in raw.items():
        if isinstance(fields, list):
            result[stage] = {str(name): ParamBounds() for name in fields}
        elif isinstance(fields, dict):
            result[stage] = {str(name): ParamBounds.model_validate(bounds or {}) for name, bounds in fields.items()}
        else:
            raise ValueError(f"client_params.{stage} must be a list of params or a mapping of params to bounds")
    return result


class ClientParamsError(ClientError):
    """Client params the pipeline does not allow (400 ``bad_params``); the message names the param only."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "bad_params", message)


def _check_bounds(stage: str, name: str, value: Any, bounds: ParamBounds) -> None:
    where = f"stage {stage!r}, parameter {name!r}"
    if bounds.choices is not None and value not in bounds.choices:
        raise ClientParamsError(f"{where}: must be one of {', '.join(map(str, bounds.choices))}")
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ClientParamsError(f"{where}: must be a finite number")
        if bounds.min is not None and value < bounds.min:
            raise ClientParamsError(f"{where}: must be at least {bounds.min:g}")
        if bounds.max is not None and value > bounds.max:
            raise ClientParamsError(f"{where}: must be at most {bounds.max:g}")
    elif isinstance(value, str | list) and bounds.max_length is not None and len(value) > bounds.max_length:
        raise ClientParamsError(f"{where}: longer than {bounds.max_length}")
    elif isinstance(value, dict):
        raise ClientParamsError(f"{where}: must not be an object")


def client_overrides(
    allowed: ClientParams, params: object, stage_names: list[str], live: dict[str, frozenset[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """A client's params as per-stage overrides, each allowed and within bounds; raises ``ClientParamsError``.

    A key naming a stage takes an object of that stage's params; any other key is a param
    applied to every stage that lets clients set it. ``live``, when given, further limits
    each stage to the params it can change while running (a ``params`` control message).
    """
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ClientParamsError("'params' must be an object")
    per_stage: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise ClientParamsError("param names must be strings")
        if key in stage_names:
            if not isinstance(value, dict):
                raise ClientParamsError(f"params for stage {key!r} must be an object")
            for name, item in value.items():
                _allow(allowed, live, key, str(name))
                per_stage.setdefault(key, {})[str(name)] = item
            continue
        stages = [stage for stage in stage_names if key in _settable(allowed, live, stage)]
        if not stages:
            raise ClientParamsError(_not_allowed(allowed, live, key))
        for stage in stages:
            per_stage.setdefault(stage, {})[key] = value
    for stage, values in per_stage.items():
        for name, value in values.items():
            _check_bounds(stage, name, value, allowed[stage][name])
    return per_stage


def _settable(allowed: ClientParams, live: dict[str, frozenset[str]] | None, stage: str) -> set[str]:
    names = set(allowed.get(stage, {}))
    return names & live.get(stage, frozenset()) if live is not None else names


def _allow(allowed: ClientParams, live: dict[str, frozenset[str]] | None, stage: str, name: str) -> None:
    if name not in _settable(allowed, live, stage):
        raise ClientParamsError(_not_allowed(allowed, live, name, stage))


def _not_allowed(allowed: ClientParams, live: dict[str, frozenset[str]] | None, name: str, stage: str = "") -> str:
    what = "changed while the session runs" if live is not None else "set by clients"
    settable = sorted(f"{s}.{n}" for s in allowed for n in _settable(allowed, live, s))
    where = f" of stage {stage!r}" if stage else ""
    hint = f" (settable: {', '.join(settable)})" if settable else " (this pipeline takes no client params)"
    return f"parameter {name[:64]!r}{where} cannot be {what}{hint}"


def prompt_bounds(allowed: ClientParams) -> ParamBounds | None:
    """The bounds on a client's prompt (a ``prompt`` control message), or None when clients set no prompt."""
    for fields in allowed.values():
        if "prompt" in fields:
            return fields["prompt"]
    return None
