"""dvc.yaml declares what each stage really depends on.

Each stage lists the library modules it imports (not the whole package), so
that changing, say, the report code does not invalidate every experiment.
This test keeps those lists true: every genstudy module a stage script
imports, directly or not, must be among its deps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m.__file__ for k, m in sys.modules.items()
                        if k.startswith("genstudy.") and getattr(m, "__file__", None))))
"""


def imported_modules(script: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(script)], capture_output=True, text=True,
                         check=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}).stdout
    return {Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(out)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_library_module_it_imports(stage):
    st = STAGES[stage]
    script = st["cmd"].split()[-1]
    deps = {d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])}
    assert script in deps, f"{stage}: its script {script} is not a dep"
    missing = {m for m in imported_modules(REPO / script)
               if m not in deps and "src/genstudy" not in deps and not m.endswith("__init__.py")}
    assert not missing, f"{stage}: add to its deps in dvc.yaml: {', '.join(sorted(missing))}"
