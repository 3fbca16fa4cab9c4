"""Every stage validates its params section before any work, with one clear message."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genstudy import params
from genstudy.params import ParamsError

REPO = Path(__file__).resolve().parents[1]


class Demo(params.Experiment):
    train: params.Training
    train_size: params.PositiveInt | None = None


GOOD = {
    "profile": "full",
    "demo": {"dataset": "fashion_mnist", "seeds": [0, 1],
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
    ("profile", "tiny", r"profile: must be one of full, smoke"),
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


def _stage_sections():
    """(stage name, its params class) for every stage script, found by importing it."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, st in dvc.items():
        script = REPO / st["cmd"].split()[-1]
        spec = importlib.util.spec_from_file_location(f"stage_{name}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        classes = [v for v in vars(module).values() if isinstance(v, type)
                   and issubclass(v, params.Section) and v.__module__ == module.__name__]
        yield name, classes


@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_the_committed_params_yaml_is_valid_for_every_stage(profile, tmp_path):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profile"] = profile
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    for name, classes in _stage_sections():
        if name not in doc:  # a stage without knobs of its own (report)
            assert not classes, f"stage {name} declares params but params.yaml has no section {name}"
            continue
        expected = "".join(w.capitalize() for w in name.split("_")) + "Params"
        top = [c for c in classes if c.__name__ in (expected, "Params")]  # Params: experiments/<stage>.py
        assert top, f"stage {name}: no params class {expected}"
        params.load(name, top[0], path)


def test_a_stage_stops_before_any_work_on_a_typo(tmp_path):
    """The real baselines stage, run on a params.yaml with a misspelled key: exit 2, one message."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["baselines"]["convnet"]["epocs"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    proc = subprocess.run([sys.executable, str(REPO / "stages/baselines.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "baselines.convnet.epocs: unknown key" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports").exists() and not (tmp_path / "models").exists()
