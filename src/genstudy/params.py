"""Loading and validating a stage's section of ``params.yaml``.

Each stage declares its section as a pydantic model (unknown keys forbidden)
and calls :func:`load` before any work. ``dvc exp run -S`` happily adds a
misspelled key to params.yaml; here that stops the stage with a message that
names the key and what is allowed.

Profiles: the top-level ``profile`` key is ``full`` (the study) or ``smoke``
(every stage at tiny scale). Under ``smoke``, the section ``smoke.<stage>`` is
merged over ``<stage>`` before validation, so ``dvc exp run -S profile=smoke``
runs the whole pipeline small without editing any section.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .data import REGISTRY

PROFILES = ("full", "smoke")
TOP_LEVEL = {"profile", "smoke"}


class ParamsError(ValueError):
    """params.yaml holds an unknown key, a wrong type or an impossible value."""


class Schema(BaseModel):
    """Base of every stage's params: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True)


# Types shared by the sections.
DatasetName = Literal[tuple(REGISTRY)]  # type: ignore[valid-type]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]
Seeds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Optimizer = Literal["sgd", "adam", "nadam"]

S = TypeVar("S", bound=Schema)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _stage_names(dvc_yaml: Path) -> set[str]:
    if not dvc_yaml.is_file():
        return set()
    return set((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_at(schema: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The (nested) model class that holds the key at ``loc``."""
    cls = schema
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part))
        if field is None:
            break
        candidates = [t for t in (field.annotation, *get_args(field.annotation))
                      if isinstance(t, type) and issubclass(t, BaseModel)]
        if not candidates:
            break
        cls = candidates[0]
    return cls


def _describe(errors: list[dict], stage: str, schema: type[Schema]) -> str:
    lines = []
    for e in errors:
        key = ".".join(str(p) for p in (stage, *e["loc"]))
        if e["type"] == "extra_forbidden":
            fields = _model_at(schema, e["loc"]).model_fields
            lines.append(f"{key}: unknown key (allowed: {', '.join(fields)})"
                         f"{_suggest(str(e['loc'][-1]), fields)}")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid params.yaml:\n  " + "\n  ".join(lines)


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ParamsError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    return doc


def profile(path: Path | str = "params.yaml") -> str:
    """The profile ``path`` selects (``full`` when it names none)."""
    return _read(Path(path)).get("profile", "full")


def load(stage: str, schema: type[S], path: Path | str = "params.yaml") -> S:
    """Validate and return ``stage``'s section of ``path`` (profile applied)."""
    path = Path(path)
    doc = _read(path)

    # Top-level keys: a section per stage of dvc.yaml, plus profile and smoke.
    stages = _stage_names(path.parent / "dvc.yaml") | {stage}
    for key in doc:
        if key not in stages | TOP_LEVEL:
            raise ParamsError(f"invalid params.yaml:\n  {key}: unknown section (stages: "
                              f"{', '.join(sorted(stages))}){_suggest(key, stages | TOP_LEVEL)}")
    profile = doc.get("profile", "full")
    if profile not in PROFILES:
        raise ParamsError(f"invalid params.yaml:\n  profile: must be one of {', '.join(PROFILES)} "
                          f"(got {profile!r})")
    smoke = doc.get("smoke") or {}
    for key in smoke:
        if key not in stages:
            raise ParamsError(f"invalid params.yaml:\n  smoke.{key}: unknown stage"
                              f"{_suggest(key, stages)}")

    section = doc.get(stage)
    if not isinstance(section, dict):
        raise ParamsError(f"invalid params.yaml:\n  {stage}: section missing or not a mapping")
    if profile == "smoke":
        section = _merge(section, smoke.get(stage) or {})
    try:
        return schema.model_validate(section)
    except ValidationError as e:
        raise ParamsError(_describe(e.errors(), stage, schema)) from None


def resolve_device(device: str) -> "torch.device":  # noqa: F821
    import torch
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Experiment(Schema):
    """Keys every experiment stage has."""
    dataset: DatasetName = "fashion_mnist"
    seeds: Seeds = [0, 1, 2]
    device: Device = "auto"  # auto: the GPU when one is present, else the CPU


class Training(Schema):
    """How one model is trained (see genstudy.training.fit)."""
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Optimizer
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
