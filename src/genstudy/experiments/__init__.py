"""The study's experiments, one module each, in the order the report shows them.

Every module holds, in this order: its ``Params`` schema, ``run(p, out, models)``
that trains and writes its tables, its figures, and ``section(out, refs)``, its
part of the report (question, table, verdict). Modules are imported only when
needed (:func:`load`), so a stage depends on its own module and not on the others.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("baselines", "flatness", "keskar", "gradient_loss", "regularization", "transfer", "sweep",
         "margins", "probes")


def load(name: str) -> ModuleType:
    """The experiment module ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")
