"""The presentation stages: ``python -m genstudy present <experiment>``.

From what the experiment's compute stage wrote under ``reports/<name>/`` (tables, curves,
metrics, ``run.json``) and its own section of ``references.yaml``, draw its figures into
``reports/<name>/figures/`` and write its report section to ``reports/<name>/section.json``,
which the report stage renders. Nothing here trains or recomputes a result, so a change of
wording, threshold or figure style reruns this in seconds.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from . import experiments, figures, verdicts
from .outputs import REPORTS, write_json
from .report import Outputs, Row, Section, claims

SECTION = "section.json"


def complete(section: Section, out: Outputs) -> Section:
    """``section`` with what every section shows besides its own text: the count of diverged runs,
    figures, params, time.

    A stage run under a profile other than the full protocol (smoke, quick) gives no verdict:
    its sizes test the code, not the claim, so the verdict says 'not a result: <profile>'."""
    if out.profile != "full":
        section.verdict = verdicts.not_a_result(out.profile) + " (the verdict is computed on the full protocol only)"
    results = out.dir / "results.csv"
    if results.is_file() and "diverged" in (df := out.table(diverged=True)):
        section.rows.append(Row("runs that diverged (left out of every test, range and mean)",
                                f"{int(df.diverged.fillna(False).astype(bool).sum())} of {len(df)}"))
    section.figures = out.figures()
    section.params = out.params
    section.wall_time_s = out.run().get("wall_time_s")
    return section


def present(name: str, refs_path: Path, reports: Path = REPORTS) -> Section:
    """Draw experiment ``name``'s figures and write its section; returns the section."""
    mod = experiments.present(name)
    out = Outputs(reports, name)
    # Only the experiment's own references: dvc.yaml tracks that section alone for this stage.
    refs = {name: (yaml.safe_load(refs_path.read_text()) or {}).get(name, {})}
    fig_dir = out.dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a figure this code no longer draws must not linger
        old.unlink()
    figures.setup()
    mod.draw(out, refs)
    section = complete(mod.section(out, refs), out)
    section.claims = claims(refs, name)
    write_json(out.dir / SECTION, section.to_json())
    print(f"present {name}: {section.verdict.splitlines()[0]}")
    return section
