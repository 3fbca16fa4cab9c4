"""E1b (Keskar's F1): the L-BFGS-B box maximiser, the sharpness, the params schema, the stages end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
import pandas as pd
import torch
from pydantic import ValidationError

from conftest import section, stage_params
from genstudy import data, measures, models
from genstudy.experiments.keskar import compute, present
from genstudy.params import ParamsError, load
from genstudy.report import Outputs, Section
from genstudy.training import fit, make_optimizer, recalibrate_batchnorm


def _quadratic(seed: int = 0):
    """f(p) = sum a_i (p_i - c_i)^2 (convex, separable): its max over the box |d_i| <= h_i is at
    the vertex d_i = +-h_i farther from c_i, i.e. sum a_i max((w_i + h_i - c_i)^2, (w_i - h_i - c_i)^2)."""
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(40, generator=g), "b": torch.randn(3, 5, generator=g)}
    # centres inside the box, so neither the start nor the sign of the gradient gives the vertex away
    c = {k: v + 5e-4 * torch.randn(v.shape, generator=g) for k, v in w.items()}
    a = {k: 0.1 + torch.rand(v.shape, generator=g) for k, v in w.items()}
    f = lambda p: sum((a[k] * (p[k] - c[k]) ** 2).sum() for k in p)  # noqa: E731
    h = {k: 1e-3 * (v.abs() + 1) for k, v in w.items()}
    top = sum((a[k] * torch.maximum((w[k] + h[k] - c[k]) ** 2, (w[k] - h[k] - c[k]) ** 2)).sum() for k in w)
    return f, w, float(top)


def test_lbfgsb_finds_the_box_maximum_of_a_convex_quadratic():
    f, w, exact = _quadratic()
    before = {k: v.clone() for k, v in w.items()}
    top, base, nit, nfev, trace = measures.box_maximum_lbfgsb(f, w, eps=1e-3, iterations=20)
    assert len(trace) == nit and trace == sorted(trace) and trace[-1] == top  # the running maximum
    assert top == pytest.approx(exact, rel=1e-6)
    assert base == pytest.approx(float(f(w)), rel=1e-6)
    assert 1 <= nit <= 20 and nfev >= nit
    assert all(torch.equal(w[k], before[k]) for k in w)


def test_lbfgsb_accepts_a_value_and_gradient_pair():
    f, w, exact = _quadratic(1)

    def pair(p):
        value = f(p)
        return float(value.detach()), dict(zip(p, torch.autograd.grad(value, list(p.values()))))
    assert measures.box_maximum_lbfgsb(pair, w, 1e-3, 20)[0] == pytest.approx(exact, rel=1e-6)


def _trained_f1(n: int = 256):
    g = torch.Generator().manual_seed(0)
    d = data.Tensors(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    model = models.seeded(0, models.keskar_f1, depth=2, width=32)
    fit(model, d, epochs=3, batch_size=64, seed=0, progress=False,
        optimizer=make_optimizer(model.parameters(), "adam", 1e-2))
    return model, d


def test_f1_layers_are_named():
    m = models.keskar_f1()
    names = [n for n, _ in m.named_children()]
    assert names[:4] == ["flatten", "fc1", "bn1", "act1"] and names[-1] == "fc6"
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_sharpness_leaves_the_model_alone_and_is_not_negative():
    model, d = _trained_f1()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}  # weights and BN buffers
    s = measures.keskar_sharpness_lbfgsb(model, d, eps=1e-3, iterations=3, batch_size=100)
    assert s.value >= 0 and s.max_loss >= s.loss and s.evaluations >= 1
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # batched exactly: the batch size does not change L(w)
    assert measures.keskar_sharpness_lbfgsb(model, d, 1e-3, 0, batch_size=256).loss == pytest.approx(s.loss, rel=1e-5)


def test_recalibrated_batchnorm_holds_the_training_set_statistics():
    model, d = _trained_f1()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    model.eval()
    recalibrate_batchnorm(model, d, batch_size=100)
    with torch.no_grad():
        pre = model.fc1(model.flatten(d.x))  # bn1's input over the whole set
    assert torch.allclose(model.bn1.running_mean, pre.mean(0), rtol=1e-3, atol=1e-3)
    assert torch.allclose(model.bn1.running_var, pre.var(0), rtol=0.05)  # mean of per-batch variances
    assert not model.training and model.bn1.momentum == 0.1
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())


def test_fit_until_stops_at_the_first_epoch_that_meets_the_criterion():
    model, d = _trained_f1(64)
    res = fit(model, d, epochs=10, batch_size=32, seed=0, progress=False,
              optimizer=make_optimizer(model.parameters(), "adam", 1e-3), until=lambda m: m["epoch"] >= 2)
    assert len(res.history) == 2


@pytest.mark.parametrize("bad, key", [({"eps": [1e-3, 0.0]}, "eps"), ({"seeds": [0, 1, 1]}, "seeds"),
                                      ({"large_fraction": 1.5}, "large_fraction"),
                                      ({"large_fraction": 0.0}, "large_fraction"),
                                      ({"epochs": 3}, "epochs")])
def test_params_refuse_bad_values_naming_the_key(bad, key):
    with pytest.raises(ValidationError, match=key):
        compute.Params(**section("keskar", **bad))


def test_params_error_names_the_key(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"keskar": section("keskar", "full", large_fraction=2)}))
    with pytest.raises(ParamsError, match=r"keskar\.large_fraction"):
        load("keskar", compute.Params, tmp_path / "params.yaml")


def test_run_writes_its_outputs_and_the_section_reads_them(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)

    def fake(n):
        return data.Tensors(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    monkeypatch.setattr(data, "load", lambda name: (fake(300), fake(100)))
    p = stage_params("keskar", seeds=[0, 1], depth=1, width=16, max_epochs=2, large_fraction=0.5,
                     small_batch=256, train_size=None, test_size=None, lbfgs_iterations=2, ascent_steps=2,
                     sharpness_size=100, threads=None, convergence_iterations=[1, 3])
    out = tmp_path / "keskar"
    compute.run(p, out, tmp_path / "models")
    present.draw(Outputs(tmp_path, "keskar"), {})
    df = Outputs(tmp_path, "keskar").table()
    assert len(df) == 4 and set(df.arm) == {"SB", "LB"} and set(df.batch_size) == {256, 150}
    assert (df[[c for c in df if c.startswith("sharpness_")]] >= 0).all().all()
    assert (out / "figures/sharpness.png").is_file()
    assert {"sharpness_lbfgsb_1e-3", "sharpness_lbfgsb_eval_1e-3", "sharpness_ascent_1e-3"} <= set(df)
    conv = pd.read_csv(out / "convergence.csv")  # the first seed of each arm, at 1 and 3 iterations
    assert list(conv.arm) == ["SB", "SB", "LB", "LB"] and list(conv.iterations) == [1, 3, 1, 3]
    assert (conv.groupby("arm").sharpness.diff().dropna() >= 0).all()  # a running maximum
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged_runs"] == 0 and {"SB_test_acc", "LB_sharpness_1e-3"} <= set(metrics)
    refs = yaml.safe_load((Path(__file__).resolve().parents[1] / "references.yaml").read_text())
    s = present.section(Outputs(tmp_path, "keskar"), {"keskar": refs["keskar"]})  # its own references only
    assert isinstance(s, Section) and any(r.reported == "205.14 ± 69.52" for r in s.rows)
    assert "LB − SB sharpness at eps 1e-3 (L-BFGS-B, %)" in s.verdict and "Welch t over 2 + 2 seeds" in s.verdict
    assert "Data set: Fashion-MNIST, where Keskar et al. used MNIST" in s.verdict
    assert any("after 1 / 3 iterations" in r.quantity for r in s.rows)
    assert any(r.reported == "167x" for r in s.rows if r.quantity.startswith("LB / SB"))


def test_batch_statistics_renormalize_a_shift_that_eval_mode_passes_on():
    """With batch statistics, shifting the pre-activations of a batch-norm layer (the bias of the
    layer before it) changes nothing: batch norm subtracts the batch's new mean. In eval mode the
    running mean stays, so the same shift changes the loss. The measured model is never touched."""
    model = models.seeded(0, models.keskar_f1, depth=1, width=16)
    g = torch.Generator().manual_seed(1)
    d = data.Tensors(torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(n for n, _ in model.named_parameters() if n.endswith("bias"))
    p = {n: v.detach() for n, v in model.named_parameters()}
    shifted = {**p, first: p[first] + 3.0}
    lf = torch.nn.functional.cross_entropy
    for batch_stats, same in ((True, True), (False, False)):
        with measures._loss_mode(model, batch_stats) as m, torch.no_grad():
            a = lf(torch.func.functional_call(m, p, (d.x,)), d.y)
            b = lf(torch.func.functional_call(m, shifted, (d.x,)), d.y)
        assert torch.isclose(a, b, rtol=1e-5).item() is same
    s = measures.keskar_sharpness_lbfgsb(model, d, eps=1e-3, iterations=2, batch_size=64, batch_stats=True)
    assert s.value >= 0 and len(s.trace) == s.iterations
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and model.training
