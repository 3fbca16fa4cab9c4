"""The study's experiments, one folder each, in the order the report shows them.

Each folder holds two files: ``compute.py``, its ``Params`` schema and ``run(p, out, models)``
that trains and writes its tables, curves, metrics and models (the DVC stage ``<name>``); and
``present.py``, its figures (``draw(out, refs)``) and its part of the report (``section(out, refs)``),
drawn from those tables alone (the stage ``present-<name>``). The split is for DVC: a compute
stage depends only on the code it runs, so a new sentence, threshold or figure style reruns
presentation in seconds and never retrains a model. Modules are imported only when needed, so a
stage depends on its own files and not on the others'.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("baselines", "flatness", "keskar", "gradient_loss", "regularization", "transfer", "sweep",
         "margins", "probes")


def _module(name: str, part: str) -> ModuleType:
    if name not in NAMES:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}{part}")


def compute(name: str) -> ModuleType:
    """Experiment ``name``'s compute module (``Params``, ``run``)."""
    return _module(name, ".compute")


def present(name: str) -> ModuleType:
    """Experiment ``name``'s presentation module (``draw``, ``section``)."""
    return _module(name, ".present")


def describe(name: str) -> str:
    """The first line of experiment ``name``'s docstring (its folder's ``__init__``)."""
    return (_module(name, "").__doc__ or "").strip().splitlines()[0]
