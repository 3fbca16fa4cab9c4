"""report: one page a person reads instead of the five notebooks.

Reads only what the experiment stages wrote and references.yaml; writes
reports/index.html (offline, figures linked beside it), reports/report.md
(the same, for a CI comment) and reports/summary.json (the run's cost).
"""

from pathlib import Path

import yaml

from genstudy import outputs, report, sections
from genstudy.cli import run_stage

REPORTS = Path("reports")


def main() -> None:
    refs = yaml.safe_load(Path("references.yaml").read_text())
    secs = sections.build(REPORTS, refs)
    summary = report.run_summary(REPORTS, ["fetch", *sections.BUILDERS])
    with outputs.atomic_path(REPORTS / "index.html") as tmp:
        tmp.write_text(report.render_html(secs, summary))
    with outputs.atomic_path(REPORTS / "report.md") as tmp:
        tmp.write_text(report.render_markdown(secs, summary))
    outputs.write_json(REPORTS / "summary.json", {
        "total_stage_time_min": round(summary["total_s"] / 60, 2),
        "stage_time_s": {st: w for st, w, _ in summary["stages"]},
        "verdicts": {s.stage: s.verdict for s in secs}})
    for s in secs:
        print(f"report: {s.stage}: {s.verdict}")


if __name__ == "__main__":
    run_stage(main)
