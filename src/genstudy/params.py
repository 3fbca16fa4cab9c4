"""Loading and validating a stage's section of ``params.yaml``.

Each stage declares its section as a pydantic model (unknown keys forbidden)
and calls :func:`load` before any work. ``dvc exp run -S`` happily adds a
misspelled key to params.yaml; here that stops the stage with a message that
names the key and what is allowed.

Profiles: the top-level ``profile`` key is ``full`` (the notebooks' protocol,
the sections as written), ``quick`` (CPU-sized subsets) or ``smoke`` (every
stage at tiny scale, minutes). Under a profile, its section ``<profile>.<stage>``
is merged over ``<stage>`` before validation, and it always wins: what a stage
runs with is a function of params.yaml alone (nothing reads git), so DVC, which
tracks params.yaml, knows when a stage must rerun. Change a quick run with
``-S quick.<stage>.<key>=...``; a ``-S <stage>.<key>`` that the profile sets is
shadowed, and the stage says so (``profile_overrides`` in its run.json).

Schemas hold no defaults: every value comes from params.yaml, so a deleted key
is an error naming it, never a stale value typed in code.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .data import REGISTRY
from .errors import StudyError

PROFILES = ("full", "quick", "smoke")
TOP_LEVEL = {"profile", "quick", "smoke"}


class ParamsError(StudyError, ValueError):
    """params.yaml holds an unknown key, a wrong type or an impossible value."""


class Schema(BaseModel):
    """Base of every stage's params: unknown keys and non-finite numbers (.inf, .nan) are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Types shared by the sections.
DatasetName = Literal[tuple(REGISTRY)]  # type: ignore[valid-type]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]
def _unique(v: list) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"must not repeat a value (got {v}): a repeated seed would count one run twice")
    return v


Seeds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), AfterValidator(_unique)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Optimizer = Literal["sgd", "adam", "nadam"]

S = TypeVar("S", bound=Schema)


def _merge(base: dict, over: dict, prefix: str = "") -> tuple[dict, dict[str, dict]]:
    """``over`` merged into ``base`` (``over`` wins), and ``{dotted key: {"section": value in
    base, "profile": value in over}}`` for every key ``over`` set."""
    out, set_ = dict(base), {}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k], sub = _merge(out[k], v, f"{prefix}{k}.")
            set_.update(sub)
        else:
            set_[f"{prefix}{k}"] = {"section": out.get(k), "profile": v}
            out[k] = v
    return out, set_


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
        elif e["type"] == "value_error" and isinstance(e.get("input"), dict):
            # a rule over several keys of a (sub-)section: its validator names each key and value,
            # so the section itself is not repeated
            lines += [f"{key}.{part}" for part in e["msg"].removeprefix("Value error, ").split("; ")]
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


def resolve(stage: str, path: Path | str = "params.yaml",
            as_profile: str | None = None) -> tuple[str, dict, dict[str, dict]]:
    """``(profile, stage's section with the profile applied, what the profile set)``: the last
    maps each dotted key ``<stage>.<key>`` the profile set to ``{"section": ..., "profile": ...}``.

    ``as_profile``: resolve as if params.yaml selected that profile. Checks the top level:
    unknown sections, the profile, profile sections' stages.
    """
    path = Path(path)
    doc = _read(path)
    stages = _stage_names(path.parent / "dvc.yaml") | {stage}
    for key in doc:
        if key not in stages | TOP_LEVEL:
            raise ParamsError(f"invalid params.yaml:\n  {key}: unknown section (stages: "
                              f"{', '.join(sorted(stages))}){_suggest(key, stages | TOP_LEVEL)}")
    profile = as_profile or doc.get("profile", "full")
    if profile not in PROFILES:
        raise ParamsError(f"invalid params.yaml:\n  profile: must be one of {', '.join(PROFILES)} "
                          f"(got {profile!r}){_suggest(str(profile), PROFILES)}")
    for name in PROFILES[1:]:
        over = doc.get(name) or {}
        if not isinstance(over, dict):
            raise ParamsError(f"invalid params.yaml:\n  {name}: must be a mapping of stage sections")
        for key in over:
            if key not in stages:
                raise ParamsError(f"invalid params.yaml:\n  {name}.{key}: unknown stage"
                                  f"{_suggest(key, stages)}")
    section = doc.get(stage)
    if not isinstance(section, dict):
        raise ParamsError(f"invalid params.yaml:\n  {stage}: section missing or not a mapping")
    if profile == "full":
        return profile, section, {}
    merged, set_ = _merge(section, (doc.get(profile) or {}).get(stage) or {})
    return profile, merged, {f"{stage}.{k}": v for k, v in set_.items()}


def validate(stage: str, schema: type[S], section: dict) -> S:
    try:
        return schema.model_validate(section)
    except ValidationError as e:
        raise ParamsError(_describe(e.errors(), stage, schema)) from None


def load(stage: str, schema: type[S], path: Path | str = "params.yaml") -> S:
    """Validate and return ``stage``'s section of ``path`` (profile applied, see :func:`resolve`)."""
    return validate(stage, schema, resolve(stage, path)[1])


def resolve_device(device: str, key: str = "device") -> "torch.device":  # noqa: F821
    """The torch device ``device`` names; ParamsError naming ``key`` when it is not present."""
    import torch
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    present = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + \
        (["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])
    name = "cuda:0" if device == "cuda" else device
    if name not in present:
        raise ParamsError(f"invalid params.yaml:\n  {key}: {device!r} is not present on this machine "
                          f"(present: {', '.join(present)}; 'auto' picks the GPU when there is one)")
    return torch.device(device)


def _sizes_fit(model: BaseModel, limit: int | None, where: str, errors: list[str]) -> None:
    """Every batch size in ``model`` (and its sub-sections) at most the training-set size it
    will see: the nearest ``train_size`` above it, or ``limit``."""
    own = getattr(model, "train_size", None)
    limit = own if isinstance(own, int) else limit
    for name in type(model).model_fields:
        v = getattr(model, name)
        if isinstance(v, BaseModel):
            _sizes_fit(v, limit, f"{where}{name}.", errors)
        elif name in ("batch_size", "batch_sizes") and limit is not None:
            big = [b for b in (v if isinstance(v, list) else [v]) if b > limit]
            if big:
                errors.append(f"{where}{name}: {big} larger than the {limit:,} training images it "
                              "trains on (batches would repeat nothing: lower it or raise train_size)")


class Experiment(Schema):
    """Keys every experiment stage has."""
    dataset: DatasetName
    seeds: Seeds
    device: Device  # auto: the GPU when one is present, else the CPU

    @model_validator(mode="after")
    def _sizes_within_the_data(self):
        """Subset sizes within the data set, batch sizes within the subsets they train on."""
        spec, errors = REGISTRY[self.dataset], []
        for key, n in (("train_size", spec.n_train), ("test_size", spec.n_test)):
            v = getattr(self, key, None)
            if isinstance(v, int) and v > n:
                errors.append(f"{key}: {v:,} is more than the {n:,} images of {self.dataset}'s split")
        _sizes_fit(self, spec.n_train, "", errors)
        if errors:
            raise ValueError("; ".join(errors))
        return self


class Training(Schema):
    """How one model is trained (see genstudy.training.fit)."""
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Optimizer
    lr: PositiveFloat
    # SGD's momentum; only SGD has one, so it is written only with optimizer sgd.
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _momentum_with_sgd(self):
        if self.optimizer == "sgd" and self.momentum is None:
            raise ValueError("momentum: required with optimizer sgd (0 for plain SGD)")
        if self.optimizer != "sgd" and self.momentum is not None:
            raise ValueError(f"momentum: only optimizer sgd has one (got {self.momentum} with "
                             f"{self.optimizer}); delete the key")
        return self
