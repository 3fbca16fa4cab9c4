"""Shared test helpers."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _deep_update(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def section(name: str, profile: str = "smoke", **overrides) -> dict:
    """Stage ``name``'s section of the committed params.yaml under ``profile``, with ``overrides``
    merged in (nested dicts merge; any other value replaces): a complete, valid starting point, so
    a test states only the values it is about (schemas have no defaults)."""
    from genstudy import params
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    merged = params._merge(doc[name], (doc.get(profile) or {}).get(name) or {})[0] \
        if profile != "full" else doc[name]
    return _deep_update(merged, overrides)


def stage_params(name: str, profile: str = "smoke", **overrides):
    """:func:`section` validated by the stage's schema."""
    from genstudy import stages
    return stages.stage(name)[0].model_validate(section(name, profile, **overrides))
