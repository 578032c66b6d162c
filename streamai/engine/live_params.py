"""Live params: a running session's ``params`` control message, checked against what its stages allow.

A message is ``{field: value}`` (for every stage that declares the field live) or
``{stage_name: {field: value}}`` (for that stage), like session params at creation.
A message is taken whole or not at all: a field that fits no stage, a field no stage
may change while running (not in its ``live_params``), or a value its ``Params``
refuses rejects the whole message with one error naming each such field, and nothing
changes. An accepted message is applied by each stage in stream order (the PARAMS
control frame's place), through ``Stage.apply_params``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..stage import Stage


class LiveParamsError(ValueError):
    """A ``params`` message that cannot be applied; ``str()`` names the fields and why."""


def merged_params(stage: Stage, changes: Mapping[str, Any]) -> BaseModel:
    """The stage's current params with ``changes``, validated by its ``Params`` (ValidationError if not)."""
    return type(stage).Params.model_validate({**stage.params.model_dump(), **changes})


def plan_live_params(message: Mapping[str, Any], stages: Mapping[str, Stage]) -> dict[str, dict[str, Any]]:
    """``{stage_name: {field: value}}`` to apply for ``message``; ``LiveParamsError`` when any part is refused."""
    changes: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []
    fixed: list[str] = []
    for key, value in message.items():
        if key in stages:
            if not isinstance(value, dict):
                raise LiveParamsError(f"params for stage {key!r} must be an object")
            model = type(stages[key]).Params.model_fields
            for field, field_value in value.items():
                if field not in model:
                    unknown.append(f"{key}.{field}")
                elif field not in stages[key].live_params:
                    fixed.append(f"{key}.{field}")
                else:
                    changes.setdefault(key, {})[field] = field_value
            continue
        owners = [name for name, stage in stages.items() if key in type(stage).Params.model_fields]
        live = [name for name in owners if key in stages[name].live_params]
        if not owners:
            unknown.append(key)
        elif not live:
            fixed.extend(f"{name}.{key}" for name in owners)
        for name in live:
            changes.setdefault(name, {})[key] = value
    problems = []
    if unknown:
        problems.append(f"unknown: {', '.join(unknown)}")
    if fixed:
        problems.append(f"not changeable while running: {', '.join(fixed)}")
    if problems:
        allowed = sorted(f"{name}.{field}" for name, stage in stages.items() for field in stage.live_params)
        raise LiveParamsError(f"params refused ({'; '.join(problems)}); live: {', '.join(allowed) or 'none'}")
    for name, fields in changes.items():
        try:
            merged_params(stages[name], fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise LiveParamsError(f"params refused: stage {name!r}, parameter {where!r}: {first['msg']}") from None
    return changes
