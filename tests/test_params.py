"""Every stage validates its params section before any work, with one clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pydantic import BaseModel

from genstudy import cli, params, stages
from genstudy.params import ParamsError

REPO = Path(__file__).resolve().parents[1]


class Demo(params.Experiment):
    train: params.Training
    train_size: params.PositiveInt | None


GOOD = {
    "profile": "full",
    "demo": {"dataset": "fashion_mnist", "seeds": [0, 1], "device": "auto", "train_size": None,
             "train": {"epochs": 3, "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9}},
    "smoke": {"demo": {"seeds": [0], "train": {"epochs": 1}}},
}


def write(tmp_path: Path, doc: dict) -> Path:
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"demo": {"cmd": "true"},
                                                                  "other": {"cmd": "true"}}}))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def with_(doc: dict, dotted: str, value) -> dict:
    import copy
    doc = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    node = doc
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return doc


def test_valid_section_loads(tmp_path):
    p = params.load("demo", Demo, write(tmp_path, GOOD))
    assert p.seeds == [0, 1] and p.train.epochs == 3 and p.device == "auto"


def test_smoke_profile_merges_its_overrides(tmp_path):
    p = params.load("demo", Demo, write(tmp_path, with_(GOOD, "profile", "smoke")))
    assert p.seeds == [0] and p.train.epochs == 1 and p.train.lr == 0.1  # untouched keys stay


def test_the_profile_always_wins_and_says_what_it_set(tmp_path):
    """`dvc exp run -S profile=smoke -S demo.train.epochs=5`: smoke sets epochs, so smoke's 1 is
    used, and the override is reported, so the shadowed 5 is visible at once."""
    doc = with_(with_(GOOD, "profile", "smoke"), "demo.train.epochs", 5)
    profile, section, overrides = params.resolve("demo", write(tmp_path, doc))
    assert profile == "smoke" and section["train"]["epochs"] == 1 and section["seeds"] == [0]
    assert overrides == {"demo.seeds": {"section": [0, 1], "profile": [0]},
                         "demo.train.epochs": {"section": 5, "profile": 1}}
    # the way to change a smoke run: its profile section
    doc = with_(doc, "smoke.demo.train.epochs", 7)
    assert params.resolve("demo", write(tmp_path, doc))[1]["train"]["epochs"] == 7


def test_params_depend_on_params_yaml_alone_not_on_git(tmp_path):
    """A changed value, committed or not, gives the same effective params: nothing reads git."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profile"] = "smoke"
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, env=env, check=True,  # noqa: E731
                                    capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "committed params")

    def effective() -> dict:
        assert _genstudy(["check"], tmp_path).returncode == 0
        return yaml.safe_load((tmp_path / "reports/check/flatness.json").read_text())

    doc["flatness"]["lr"] = 0.005            # a section value smoke does not set
    doc["smoke"]["flatness"]["epochs"] = 3   # and one of smoke's own
    path.write_text(yaml.safe_dump(doc))
    before = effective()
    git("commit", "-qam", "the changed values")
    after = effective()
    assert before == after
    assert after["params"]["lr"] == 0.005 and after["params"]["epochs"] == 3


def _fields_with_defaults(schema: type[BaseModel], prefix: str):
    for name, field in schema.model_fields.items():
        key = f"{prefix}.{name}"
        if not field.is_required() and not any(issubclass(schema, cls) and name == f for cls, f in MAY_DEFAULT):
            yield key
        for t in (field.annotation, *getattr(field.annotation, "__args__", ())):
            for sub in (t, *getattr(t, "__args__", ())):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    yield from _fields_with_defaults(sub, key)


def _may_default():
    from genstudy.experiments.regularization.compute import Variant
    # A default that is not a value but "not applicable": SGD's momentum (absent for Adam) and a
    # regularization variant's switches (a variant lists only what it turns on; off by default).
    return {(params.Training, "momentum"), *((Variant, f) for f in Variant.model_fields)}


MAY_DEFAULT: set = set()


def test_every_value_comes_from_params_yaml_not_from_a_schema_default():
    """Schemas hold no defaults: a key deleted from params.yaml is an error naming it, never a
    stale value typed in code (three such defaults once disagreed with params.yaml)."""
    MAY_DEFAULT.update(_may_default())
    found = [k for name in stages.STAGES for k in _fields_with_defaults(stages.stage(name)[0], name)]
    assert not found, f"schema fields with a default (give params.yaml the value instead): {found}"


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_numbers_are_refused(tmp_path, value):
    with pytest.raises(ParamsError, match=r"demo\.train\.lr: Input should be a finite number"):
        params.load("demo", Demo, write(tmp_path, with_(GOOD, "demo.train.lr", value)))


def test_a_misspelled_profile_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"profile: must be one of full, quick, smoke \(got 'smok'\); "
                                          r"did you mean 'smoke'"):
        params.load("demo", Demo, write(tmp_path, with_(GOOD, "profile", "smok")))


def test_yaml_1_1_exponent_strings_are_numbers(tmp_path):
    # PyYAML reads `1e-3` as a string (YAML 1.1); it still means 0.001.
    p = params.load("demo", Demo, write(tmp_path, with_(GOOD, "demo.train.lr", "1e-3")))
    assert p.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("dotted,value,needle", [
    ("demo.epocs", 3, r"demo\.epocs: unknown key \(allowed: dataset, seeds, device, train"),
    ("demo.train.epocs", 3, r"demo\.train\.epocs: unknown key \(allowed: epochs, batch_size.*"
                            r"did you mean 'epochs'"),
    ("demo.train.lr", -0.1, r"demo\.train\.lr: Input should be greater than 0"),
    ("demo.train.batch_size", 0, r"demo\.train\.batch_size: Input should be greater than 0"),
    ("demo.train.epochs", "many", r"demo\.train\.epochs: .*valid integer"),
    ("demo.train.optimizer", "adamw", r"demo\.train\.optimizer: .*'sgd', 'adam' or 'nadam'"),
    ("demo.dataset", "cifar10", r"demo\.dataset: .*'fashion_mnist' or 'mnist'"),
    ("demo.seeds", [], r"demo\.seeds: .*at least 1"),
    ("demo.seeds", [-1], r"demo\.seeds\.0: .*greater than or equal to 0"),
    ("demo.device", "gpu", r"demo\.device: .*pattern"),
    ("demo.train_size", 0, r"demo\.train_size"),
    ("demo.train.momentum", 1.5, r"demo\.train\.momentum: .*less than 1"),
    ("profile", "tiny", r"profile: must be one of full, quick, smoke"),
    ("demoo", {"seeds": [1]}, r"demoo: unknown section .*did you mean 'demo'"),
    ("smoke.dmeo", {}, r"smoke\.dmeo: unknown stage"),
    ("smoke.demo.train.lr", 0, r"demo\.train\.lr: Input should be greater than 0"),
])
def test_bad_params_are_named(tmp_path, dotted, value, needle):
    doc = with_(GOOD, dotted, value)
    if dotted.startswith("smoke."):
        doc["profile"] = "smoke"
    with pytest.raises(ParamsError, match=needle):
        params.load("demo", Demo, write(tmp_path, doc))


def test_missing_required_key_is_named(tmp_path):
    doc = with_(GOOD, "demo.train", {"epochs": 1, "batch_size": 1, "optimizer": "sgd"})
    with pytest.raises(ParamsError, match=r"demo\.train\.lr: required key is missing"):
        params.load("demo", Demo, write(tmp_path, doc))


def test_unreadable_params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("demo: [unclosed")
    with pytest.raises(ParamsError, match="cannot read"):
        params.load("demo", Demo, path)


@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_the_committed_params_yaml_is_valid_for_every_stage(profile, tmp_path):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profile"] = profile
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    for name in stages.STAGES:
        params.load(name, stages.stage(name)[0], path)
    assert set(doc) == {*stages.STAGES, "profile", "quick", "smoke"}


def _genstudy(args, cwd):
    return subprocess.run([sys.executable, "-m", "genstudy", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_a_stage_stops_before_any_work_on_a_typo(tmp_path):
    """The real baselines stage, run on a params.yaml with a misspelled key: exit 2, one message."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["baselines"]["convnet"]["epocs"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    proc = _genstudy(["baselines"], tmp_path)
    assert proc.returncode == 2
    assert "baselines.convnet.epocs: unknown key" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports").exists() and not (tmp_path / "models").exists()


def test_check_names_every_bad_key_of_every_section(tmp_path):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    good = _genstudy(["check"], tmp_path)
    assert good.returncode == 0 and "every section is valid" in good.stdout
    doc["flatness"]["lr"] = -0.001
    doc["sweep"]["lrss"] = [0.1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    bad = _genstudy(["check"], tmp_path)
    assert bad.returncode == 1
    assert "flatness.lr: Input should be greater than 0 (got -0.001)" in bad.stderr
    assert "sweep.lrss: unknown key" in bad.stderr and "did you mean 'lrs'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(profile="nonsense"), "profile: must be one of full, quick, smoke (got 'nonsense')"),
    (lambda d: d["flatness"].update(batch_sizes=[100000]),
     "  flatness.batch_sizes: [100000] larger than the 3,000 training images it trains on"),
    (lambda d: d["flatness"].update(train_size=100000),
     "  flatness.train_size: 100,000 is more than the 60,000 images of fashion_mnist's split"),
    (lambda d: d.update(bogus={"x": 1}), "bogus: unknown section"),
    (lambda d: d["flatness"].update(device="cuda:7"), "flatness.device: 'cuda:7' is not present on this machine"),
    (lambda d: d["smoke"]["flatness"].update(epocs=1), "(under profile smoke)"),
])
def test_check_refuses_the_whole_file_and_every_profile(tmp_path, change, needle):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    change(doc)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    proc = _genstudy(["check"], tmp_path)
    assert proc.returncode == 1 and needle in proc.stderr, proc.stderr
    assert "(got {" not in proc.stderr  # the key and its value, never the whole section
    assert not (tmp_path / "reports" / "check").exists()  # nothing written for the stages to run on


def test_help_lists_every_stage_with_one_line():
    proc = _genstudy(["--help"], REPO)
    assert proc.returncode == 0
    for name in (*cli.COMPUTE, "present NAME", "report", "check"):
        line = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line and len(line.split(None, 1)[1]) > 10, f"--help has no description of {name}"
