"""dvc.yaml declares what each stage really depends on.

Each stage lists the library modules it imports (not the whole package), so
that changing, say, the report code does not invalidate every experiment.
This test keeps those lists true: every genstudy module that `python -m
genstudy <stage>` imports, directly or not, must be among its deps.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

# What a stage run imports: the command line, then the stage (the report imports every
# experiment's section, through genstudy.render).
PROBE = """
import json, sys
from genstudy import cli
if sys.argv[1] in ("report", "check"):
    from genstudy import experiments
    if sys.argv[1] == "report":
        from genstudy import render
    for name in experiments.NAMES:
        experiments.load(name)
else:
    cli.stage(sys.argv[1])
print(json.dumps(sorted(m.__file__ for k, m in sys.modules.items()
                        if k.startswith("genstudy") and getattr(m, "__file__", None))))
"""


@functools.cache
def imported_modules(stage: str) -> frozenset[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, stage], capture_output=True, text=True,
                         check=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}).stdout
    return frozenset(Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(out))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_library_module_it_imports(stage):
    st = STAGES[stage]
    assert st["cmd"] == f"python -m genstudy {stage}"
    deps = {d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])}
    missing = {m for m in imported_modules(stage) | {"src/genstudy/__main__.py"}
               if m not in deps and m != "src/genstudy/__init__.py"}
    assert not missing, f"{stage}: add to its deps in dvc.yaml: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("stage", sorted(set(STAGES) - {"report", "check"}))
def test_a_stage_imports_no_other_experiment(stage):
    others = {f"src/genstudy/experiments/{n}.py" for n in STAGES if n != stage}
    assert not imported_modules(stage) & others
