"""The report stage: every experiment's section rendered as one HTML page (offline) and Markdown.

It reads only what the stages wrote: each experiment's ``section.json`` and figures (its
presentation stage) and each compute stage's ``run.json`` (time, machine, code commit, what the
profile set); it never recomputes a result.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import yaml

from . import verdicts
from .cli import NAMES
from .outputs import REPORTS, atomic_path, write_json
from .report import Outputs, Section


def profile_overrides(runs: dict[str, dict]) -> list[tuple[str, object, object]]:
    """(key, value in its section, value the profile set) for every key a stage's profile changed."""
    return [(k, v["section"], v["profile"]) for r in runs.values()
            for k, v in sorted((r.get("profile_overrides") or {}).items()) if v["section"] != v["profile"]]


# --- rendering ----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.5}
h1{border-bottom:2px solid #333}h2{margin-top:2.2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.92em;max-width:100%;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.verdict{background:#eef6ee;border-left:4px solid #4a4;padding:.5em 1em}
.verdict.no{background:#fbeeee;border-left-color:#c44}.verdict.partly{background:#fbf6e6;border-left-color:#ca4}
.verdict.none{background:#f0f0f0;border-left-color:#888}.verdict ul{margin:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}details pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
nav a{margin-right:1em}
"""


VERDICT_CLASS = {verdicts.REPRODUCED: "verdict", verdicts.PARTLY: "verdict partly",
                 verdicts.INCONCLUSIVE: "verdict partly", verdicts.NOT_REPRODUCED: "verdict no",
                 verdicts.CONTRADICTED: "verdict no"}


def _verdict_html(verdict: str) -> str:
    """The label in bold, each part of the claim as a list item, the note after them."""
    e = html.escape
    first, *rest = verdict.split("\n")
    label, _, tail = first.partition(":")
    items = "".join(f"<li>{e(line[2:])}</li>" for line in rest if line.startswith("- "))
    notes = " ".join(e(line) for line in rest if not line.startswith("- "))
    return (f"<div class='{VERDICT_CLASS.get(label, 'verdict none')}'><b>Verdict: {e(label)}</b>{e(tail)}"
            + (f"<ul>{items}</ul>" if items else "") + (f"<p>{notes}</p>" if notes else "") + "</div>")


OURS = "this study: mean ± sd [95 % CI] (n seeds)"


def _banner(summary: dict) -> str:
    """A warning for a run that is not the full protocol ('' for the full protocol)."""
    if summary["profile"] == "full":
        return ""
    return (f"This report was built from a run with profile {summary['profile']}: its sizes test the "
            "code, not the claims, so no verdict is given.")


def render_html(sections: list[Section], summary: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<title>Why do neural networks generalize? Study report</title>",
             f"<style>{CSS}</style></head><body>",
             "<h1>Why do neural networks generalize? Study report</h1>",
             f"<p class='verdict none'><b>{html.escape(_banner(summary))}</b></p>" if _banner(summary) else "",
             "<nav>" + "".join(f"<a href='#{s.stage}'>{e(s.title)}</a>" for s in sections) +
             "<a href='#run'>Run summary</a></nav>"]
    for s in sections:
        parts.append(f"<h2 id='{s.stage}'>{e(s.title)}</h2><p>{e(s.question)}</p>")
        if s.claims:
            parts.append("<p class='claims'><b>The claim tested:</b> " + "; ".join(map(e, s.claims)) + "</p>")
        parts.append(_verdict_html(s.verdict))
        parts.append(f"<table><tr><th>quantity</th><th>{OURS}</th>"
                     "<th>the notebook / paper reported</th></tr>")
        parts += [f"<tr><td>{e(r.quantity)}</td><td>{e(r.ours)}</td><td>{e(r.reported)}</td></tr>"
                  for r in s.rows]
        parts.append("</table>")
        for note in s.notes:
            parts.append(f"<p><i>{e(note)}</i></p>")
        for f in s.figures:
            parts.append(f"<figure><img src='{e(f.as_posix())}' alt='{e(f.stem)}' loading='lazy'>"
                         f"<figcaption>{e(f.as_posix())}</figcaption></figure>")
        cost = f" · stage time {s.wall_time_s:.0f} s" if s.wall_time_s is not None else ""
        parts.append(f"<details><summary>Parameters used{cost}</summary><pre>"
                     f"{e(yaml.safe_dump(s.params, sort_keys=False))}</pre></details>")
    parts.append("<h2 id='run'>Run summary</h2>")
    parts.append(_summary_html(summary))
    parts.append("</body></html>")
    return "\n".join(parts)


SUMMARY_COLUMNS = ("stage", "wall time (s)", "machine calibration at its start (fp32 matmul GFLOP/s, load)",
                   "device", "CPU (torch capability)", "code commit")


def _summary_rows(summary: dict) -> list[tuple[str, ...]]:
    return [(st, "n/a" if w is None else f"{w:.0f}", cal, dev, cpu, commit)
            for st, w, cal, dev, cpu, commit in summary["stages"]]


def _summary_html(summary: dict) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in SUMMARY_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                   for row in _summary_rows(summary))
    out = [f"<p>profile <code>{e(summary['profile'])}</code>"
           f" · total stage time {summary['total_s'] / 60:.1f} min</p>",
           f"<table><tr>{head}</tr>{rows}</table>",
           "<p>" + " · ".join(f"{e(k)} {e(v)}" for k, v in summary["versions"].items()) + "</p>"]
    if summary["overrides"]:
        diff = "".join(f"<tr><td>{e(k)}</td><td>{e(str(a))}</td><td>{e(str(b))}</td></tr>"
                       for k, a, b in summary["overrides"])
        out.append(f"<h3>Parameters the profile set</h3>"
                   f"<table><tr><th>key</th><th>its section</th><th>this run</th></tr>{diff}</table>")
    else:
        out.append("<p>Every stage ran with its params.yaml section as written (no profile override).</p>")
    return "\n".join(out)


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: list[Section], summary: dict) -> str:
    out = ["# Why do neural networks generalize? Study report", ""]
    if _banner(summary):
        out += [f"> **{_banner(summary)}**", ""]
    for s in sections:
        first, *rest = s.verdict.split("\n")
        label, _, tail = first.partition(":")
        out += [f"## {s.title}", "", s.question, ""]
        if s.claims:
            out += ["**The claim tested:** " + "; ".join(s.claims), ""]
        out += [f"**Verdict: {label}**{tail}", "",
                *[ln for ln in rest if ln.startswith("- ")], "",
                *[ln for ln in rest if not ln.startswith("- ")], "",
                f"| quantity | {OURS} | the notebook / paper reported |",
                "| --- | --- | --- |"]
        out += [f"| {_md_cell(r.quantity)} | {_md_cell(r.ours)} | {_md_cell(r.reported)} |" for r in s.rows]
        out.append("")
        out += [f"_{n}_\n" for n in s.notes]
        out += [f"![{f.stem}]({f.as_posix()})" for f in s.figures]
        cost = f" (stage time {s.wall_time_s:.0f} s)" if s.wall_time_s is not None else ""
        out += ["", f"<details><summary>Parameters used{cost}</summary>", "", "```yaml",
                yaml.safe_dump(s.params, sort_keys=False).rstrip(), "```", "</details>", ""]
    out += ["## Run summary", "",
            f"profile `{summary['profile']}` · total stage time {summary['total_s'] / 60:.1f} min", "",
            "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + " --- |" * len(SUMMARY_COLUMNS)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _summary_rows(summary)]
    out += ["", " · ".join(f"{k} {v}" for k, v in summary["versions"].items()), ""]
    if summary["overrides"]:
        out += ["Parameters the profile set:", "", "| key | its section | this run |", "| --- | --- | --- |"]
        out += [f"| {k} | {_md_cell(a)} | {_md_cell(b)} |" for k, a, b in summary["overrides"]]
    else:
        out.append("Every stage ran with its params.yaml section as written (no profile override).")
    return "\n".join(out) + "\n"


def run_summary(reports: Path, stages: list[str]) -> dict:
    """Cost and provenance of the run, from each stage's run.json: its time, device, CPU, code
    commit, the versions, the profile(s), and the parameters the profile set."""
    runs = {st: Outputs(reports, st).run() for st in stages}
    any_run = next((r for r in runs.values() if r), {})
    profiles = sorted({r.get("profile", "full") for r in runs.values() if r})

    def calibration(r: dict) -> str:
        c = r.get("calibration")
        return "not recorded" if not c else f"{c['matmul_gflops']:g} GFLOP/s, load {c['load_average_1min']}"

    def cpu(r: dict) -> str:
        return f"{r['cpu']} ({r.get('torch_cpu_capability', '?')})" if r.get("cpu") else "?"

    def commit(r: dict) -> str:
        c = r.get("commit")
        return "?" if not c else c[:10] + ("+changes" if r.get("commit_dirty") else "")
    return {
        "profile": ", ".join(profiles) or "full",
        "stages": [(st, r.get("wall_time_s"), calibration(r), r.get("device", "?"), cpu(r), commit(r))
                   for st, r in runs.items()],
        "total_s": sum(r.get("wall_time_s") or 0.0 for r in runs.values()),
        "versions": {k: any_run.get(k, "?") for k in ("python", "torch", "torchvision")},
        "overrides": profile_overrides(runs),
    }


def write(reports: Path, sections: list[Section], summary: dict) -> None:
    """reports/index.html, reports/report.md and reports/summary.json, each atomically."""
    with atomic_path(reports / "index.html") as tmp:
        tmp.write_text(render_html(sections, summary))
    with atomic_path(reports / "report.md") as tmp:
        tmp.write_text(render_markdown(sections, summary))
    write_json(reports / "summary.json", {
        "total_stage_time_min": round(summary["total_s"] / 60, 2),
        "stage_time_s": {st: w for st, w, *_ in summary["stages"]},
        "verdicts": {s.stage: s.verdict for s in sections}})


def build(reports: Path = REPORTS) -> list[Section]:
    """Every experiment's section (``reports/<name>/section.json``), written as the report."""
    sections = []
    for name in NAMES:
        path = reports / name / "section.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro present-{name}` first")
        sections.append(Section.from_json(json.loads(path.read_text())))
        print(f"report: {name}: {sections[-1].verdict.splitlines()[0]}")
    write(reports, sections, run_summary(reports, ["fetch", *NAMES]))
    return sections
