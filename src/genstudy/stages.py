"""The compute stages: ``fetch`` and one per experiment, each validated, run and recorded; and
``check``, which validates all of params.yaml before DVC runs (and deletes the outputs of) any.

A stage's ``reports/<stage>/run.json`` records what it ran with (the effective params, what the
profile set), how long it took, and where: the machine (CPU model, torch's CPU capability,
threads), the library versions and the git commit of the code. Only params.yaml decides the
params; the commit is provenance.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import data, experiments, params
from .outputs import REPORTS, stage_dirs, write_json

PARAMS = Path("params.yaml")
STAGES = ("fetch", *experiments.NAMES)


class FetchParams(params.Schema):
    # Data sets the experiments may use (each experiment's `dataset` must be one of them).
    datasets: list[params.DatasetName]
    # Per data set, a directory holding the four IDX files (.gz or not), tried before the mirrors.
    # null: the registry's default (Debian's dataset-fashion-mnist for fashion_mnist).
    local_dirs: dict[params.DatasetName, str | None]


def fetch(p: FetchParams, out: Path, models: Path) -> None:
    """Put the verified IDX files of ``fetch.datasets`` under data/raw."""
    for name in p.datasets:
        where = data.fetch(name, data.RAW, p.local_dirs.get(name))
        print(f"fetch: {name} verified in {where}")


def stage(name: str) -> tuple[type[params.Schema], callable]:
    """``(params schema, run function)`` of compute stage ``name``."""
    if name == "fetch":
        return FetchParams, fetch
    mod = experiments.compute(name)
    return mod.Params, mod.run


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def machine() -> dict:
    """Where a stage ran: the CPU and what torch runs on it, the device, the versions, the code."""
    import torch
    import torchvision
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"device": gpu or f"cpu ({torch.get_num_threads()} threads)",
            "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform(),
            "commit": commit, "commit_dirty": dirty, "packages": packages()}


def packages() -> dict[str, str]:
    """The version of every installed distribution (what requirements.lock pins), by name."""
    from importlib.metadata import distributions
    return dict(sorted((d.metadata["Name"].lower(), d.version) for d in distributions()
                       if d.metadata["Name"]))


def effective(name: str, as_profile: str | None = None) -> dict:
    """What stage ``name`` runs with: the profile, the validated params, and what the profile set
    (``{"<stage>.<key>": {"section": value in the section, "profile": value used}}``)."""
    profile, section, overrides = params.resolve(name, PARAMS, as_profile=as_profile)
    p = params.validate(name, stage(name)[0], section)
    if hasattr(p, "device"):  # a device this machine does not have is refused here, naming the key
        params.resolve_device(p.device, key=f"{name}.device")
    return {"profile": profile, "params": p.model_dump(mode="json"), "profile_overrides": overrides}


def shadowed(eff: dict) -> list[str]:
    """One line per key whose section value the profile replaced with another value."""
    return [f"{key} = {v['section']!r} in its section is overridden by profile {eff['profile']}: "
            f"{v['profile']!r} (change it with -S {eff['profile']}.{key}=...)"
            for key, v in eff["profile_overrides"].items()
            if v["section"] is not None and v["section"] != v["profile"]]


def configure(p: params.Schema) -> dict:
    """The one place that sets how torch runs a stage, before it trains anything; returns what it set.

    - threads: the stage's ``threads`` param where it has one (null, or no such param: torch's default);
    - denormal floats flushed to zero on the CPU, as TensorFlow (the notebooks' Keras) does. Measured
      in E3 at the full protocol: the l2 variant's epochs slowed from 3.5 s to 25 s as its numbers
      underflowed (55 % of the time in MKL's sgemm); a 32 x 784 x 300 matmul takes 14 ms on denormal
      inputs and 0.2 ms flushed. Only values below 1.2e-38 change (to zero);
    - on a GPU, deterministic algorithms (cuDNN's autotuner off, cuBLAS's fixed workspace): a rerun
      on the same GPU and software then repeats its numbers, where torch has such algorithms (it
      warns where it has none). On the CPU the stages are byte-identical run to run anyway.
    """
    import torch
    threads = getattr(p, "threads", None)
    if threads:
        torch.set_num_threads(threads)
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot (then nothing changes)
    gpu = str(params.resolve_device(p.device)).startswith("cuda") if hasattr(p, "device") else False
    if gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return {"threads": torch.get_num_threads(), "flush_denormal": bool(flushed),
            "deterministic_algorithms": gpu}


def calibrate(seconds: float = 1.0, n: int = 512) -> dict:
    """How fast this machine is right now: the fp32 GFLOP/s of repeated n x n matmuls over about
    ``seconds``, at the threads the stage will use, and the load average. Stage times from different
    machines, or from a loaded one, can then be told apart (the report shows both)."""
    import torch
    g = torch.Generator().manual_seed(0)  # its own generator: the stage's random draws stay untouched
    a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
    a @ b  # warm-up
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        done += 1
    return {"matmul_gflops": round(2 * n ** 3 * done / elapsed / 1e9, 1), "matmul_n": n,
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def run_stage(name: str) -> None:
    schema, run = stage(name)
    out, models = stage_dirs(name)
    eff = effective(name)
    for line in shadowed(eff):
        print(f"{name}: {line}")
    p = schema.model_validate(eff["params"])
    runtime = configure(p)
    calibration = calibrate()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run(p, out, models)
    wall = time.perf_counter() - t0
    write_json(out / "run.json", {
        "stage": name, **eff, "wall_time_s": round(wall, 2),
        "started": started.isoformat(timespec="seconds"), "runtime": runtime, "calibration": calibration,
        **machine()})
    print(f"{name}: done in {wall:.0f} s")


@functools.lru_cache
def _train_labels(dataset: str):
    """The training labels of ``dataset`` when it is already fetched, else None."""
    try:
        return data.load(dataset)[0].y
    except (OSError, data.DataError):
        return None


def _task_b_images(dataset: str, classes: list[int]) -> int | None:
    """How many training images task B's two classes have, when the data set is already fetched
    (None before the first fetch: transfer's own check is then the only one)."""
    labels = _train_labels(dataset)
    return None if labels is None else int(sum((labels == c).sum() for c in classes))


def across_stages(effs: dict[str, dict]) -> list[str]:
    """The rules that span sections or depend on the data, as one line each naming the key, the
    value and what is allowed. A stage checks its own again when it runs (a second line), but by
    then DVC has deleted its outputs; here nothing has run yet."""
    p, problems = {name: eff["params"] for name, eff in effs.items()}, []
    fetched = p["fetch"]["datasets"] if "fetch" in p else None
    for name, q in p.items():
        if fetched is not None and "dataset" in q and q["dataset"] not in fetched:
            problems.append(f"{name}.dataset: {q['dataset']!r} is not fetched (fetch.datasets: {fetched}); "
                            f"add it to fetch.datasets or pick one of {fetched}")
    if "gradient_loss" in p and "baselines" in p:
        problems += _baseline_arm(p["gradient_loss"], p["baselines"])
    if "transfer" in p:
        t = p["transfer"]
        n_b = _task_b_images(t["dataset"], t["b_classes"])
        if n_b is not None and t["b_train_size"] > n_b:
            problems.append(f"transfer.b_train_size: {t['b_train_size']} is more than the {n_b} training "
                            f"images of classes {t['b_classes']} in {t['dataset']}; at most {n_b}")
    return problems


def _baseline_arm(g: dict, b: dict) -> list[str]:
    """gradient_loss's baseline arm is the baselines stage's convnet of the same seed and images."""
    problems = []
    missing = [s for s in g["seeds"] if s not in b["seeds"]]
    if missing:
        problems.append(f"gradient_loss.seeds: {missing} have no baseline convnet (baselines.seeds: "
                        f"{b['seeds']}); use seeds among baselines.seeds or add them there")
    if g["train_size"] != b["convnet"]["train_size"]:
        problems.append(f"gradient_loss.train_size: {g['train_size']} differs from "
                        f"baselines.convnet.train_size {b['convnet']['train_size']}, on which its baseline "
                        "arm trained; make them equal")
    if g["dataset"] != b["dataset"]:
        problems.append(f"gradient_loss.dataset: {g['dataset']!r} differs from baselines.dataset "
                        f"{b['dataset']!r}, on which its baseline arm trained; make them equal")
    return problems


def check() -> int:
    """Validate every section of params.yaml under every profile, before DVC runs (and deletes the
    outputs of) any stage; print each problem. When all is valid, write what each stage will run
    with to reports/check/<stage>.json (each stage depends on its own file, so a change to one
    section reruns only that stage). Returns the number of problems."""
    from .params import ParamsError
    try:  # the top level as the file stands: its sections and its own profile
        params.resolve(STAGES[0], PARAMS)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    current, bad, found = params.profile(PARAMS), 0, {}
    for profile in params.PROFILES:
        where = "" if profile == current else f" (under profile {profile})"
        effs = {}
        for name in STAGES:
            try:
                effs[name] = effective(name, as_profile=profile)
            except ParamsError as e:
                bad += 1
                print(f"error{where}: {e}", file=sys.stderr)
        for problem in across_stages(effs):  # the rules across the sections valid on their own
            bad += 1
            print(f"error{where}: invalid params.yaml:\n  {problem}", file=sys.stderr)
        if profile == current:
            found = effs
    if bad:
        return bad
    for name, eff in found.items():
        write_json(REPORTS / "check" / f"{name}.json", eff)
        for line in shadowed(eff):
            print(f"check: {line}")
    print(f"params.yaml: every section is valid under every profile (this run: {current})")
    return 0
