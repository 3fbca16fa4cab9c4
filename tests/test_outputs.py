"""Outputs are strict JSON and land atomically."""

import json
import math

import numpy as np
import pytest

from genstudy import outputs


def test_write_json_turns_nan_and_inf_into_null(tmp_path):
    path = tmp_path / "m.json"
    outputs.write_json(path, {"a": [1.0, math.nan], "b": math.inf, "c": 2, "d": np.float64("nan"),
                              "e": np.float32(0.5)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [1.0, None], "b": None, "c": 2, "d": None, "e": 0.5}


def test_atomic_path_leaves_nothing_behind_when_the_writer_fails(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with outputs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
