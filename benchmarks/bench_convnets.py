"""Training steps of E2's convnet (both arms) and E7's: the plain eager model vs the study's path.

  plain : the notebook's model as written (``convnet_e2(plain=True)``, ``convnet_e7()``),
          E2's gradient loss left to autograd (``gradient_loss_autograd``), glibc's default malloc
  study : what the stages run (``convnet_e2()``, ``objectives.gradient_loss``, and
          ``keep_freed_memory()`` as ``training.fit`` calls it)

The malloc setting is per process, so every (config, way) runs in a fresh worker process,
and the workers alternate plain, study, plain, study ... (--repeats rounds): load from other
processes hits both alike, and each reports its best chunk of steps. Both ways start from the
same weights and see the same batches; their losses must agree to float rounding. Each worker
also times a 2048x2048 float32 matmul; the best rate over the run is the ceiling that the
step's FLOPs (conv and dense layers; forward 2*MACs, a step ~3x forward) are compared to.

    python benchmarks/bench_convnets.py [--repeats 3] [--steps 24] [--configs e2_ce e2_grad e7]
    python benchmarks/bench_convnets.py --profile e2_ce     # torch.profiler tables, plain and study
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {  # model, objective, batch, optimizer
    "e2_ce": ("e2", "ce", 100, "adam"),
    "e2_grad": ("e2", "grad", 100, "adam"),
    "e7": ("e7", "ce", 512, "sgd"),
}


def forward_flops(model, x) -> float:
    """2 * multiply-adds of the Conv2d and Linear layers for the batch ``x``."""
    import torch
    from torch import nn
    macs = []

    def hook(m, inp, out):
        per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] \
            if isinstance(m, nn.Conv2d) else m.in_features
        macs.append(out.numel() * per_out)
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return 2.0 * sum(macs)


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


def worker(config: str, way: str, steps: int, chunk: int, profile: bool = False) -> dict:
    """Time ``steps`` training steps (best chunk of ``chunk`` steps) in this process."""
    import torch
    import torch.nn.functional as F
    from genstudy import models
    from genstudy.memory import keep_freed_memory
    from genstudy.objectives import gradient_loss, gradient_loss_autograd
    arch, loss, batch, opt_name = CONFIGS[config]
    study = way == "study"
    if study:
        keep_freed_memory()
    if arch == "e2":
        model = models.seeded(0, models.convnet_e2, plain=not study)
    else:
        model = models.seeded(0, models.convnet_e7)
    gen = torch.Generator().manual_seed(1)
    xs = torch.rand(steps, batch, 1, 28, 28, generator=gen)
    ys = torch.randint(0, 10, (steps, batch), generator=gen)
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    objective = (gradient_loss if study else gradient_loss_autograd) if loss == "grad" else None
    flops = 3 * forward_flops(models.convnet_e2(plain=True) if arch == "e2" else model, xs[0])

    def step(x, y):
        batch_loss = objective(model, x, y)[0] if objective else F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        return batch_loss.detach()

    if profile:  # warm up, then one table of 10 profiled steps (self CPU time, % of the total)
        from torch.profiler import ProfilerActivity, profile as torch_profile
        for j in range(3):
            step(xs[j], ys[j])
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for j in range(3, 13):
                step(xs[j], ys[j])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        return {}
    losses, times = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(0, steps, chunk):
        t = time.perf_counter()
        losses += [step(xs[j], ys[j]) for j in range(i, min(i + chunk, steps))]
        times.append((time.perf_counter() - t) / len(range(i, min(i + chunk, steps))))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    return {"s_per_step": min(times[1:] or times), "losses": [v.item() for v in losses],
            "flops": flops, "batch": batch, "faults": faults, "matmul": matmul_rate(),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (plain, study) workers per config")
    ap.add_argument("--steps", type=int, default=24, help="steps per worker (the first chunk warms up)")
    ap.add_argument("--chunk", type=int, default=4, help="steps per timed chunk")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "WAY"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", metavar="CONFIG", choices=list(CONFIGS),
                    help="print torch.profiler's top ops of CONFIG's step, plain then study, and exit")
    a = ap.parse_args()
    if a.profile:
        for way in ("plain", "study"):
            print(f"--- {a.profile} {way}: top ops of 10 steps (self CPU time)")
            subprocess.run([sys.executable, __file__, "--worker", a.profile, way, "--steps", "13", "--profile-worker"], check=True)
        return
    if a.worker:
        if a.profile_worker:
            worker(*a.worker, a.steps, a.chunk, profile=True)
            return
        print(json.dumps(worker(*a.worker, a.steps, a.chunk)))
        return
    runs: dict[tuple[str, str], list[dict]] = {}
    for config in a.configs:
        for _ in range(a.repeats):
            for way in ("plain", "study"):
                out = subprocess.run([sys.executable, __file__, "--worker", config, way, "--steps",
                                      str(a.steps), "--chunk", str(a.chunk)],
                                     check=True, capture_output=True, text=True).stdout
                runs.setdefault((config, way), []).append(json.loads(out.splitlines()[-1]))
    peak = max(r["matmul"] for rs in runs.values() for r in rs)
    print(f"threads={runs[next(iter(runs))][0]['threads']} steps/worker={a.steps} chunk={a.chunk} "
          f"repeats={a.repeats}; matmul 2048x2048 fp32: {peak / 1e9:.1f} GFLOP/s (best in the run)")
    print(f"{'config':8} {'way':6} {'ms/step':>8} {'images/s':>9} {'GFLOP/s':>8} {'of matmul':>9} {'faults/step':>11}")
    for config in a.configs:
        best = {way: min(runs[config, way], key=lambda r: r["s_per_step"]) for way in ("plain", "study")}
        for way, r in best.items():
            t = r["s_per_step"]
            share = f"{r['flops'] / t / peak:9.1%}" if not config.endswith("grad") else f"{'-':>9}"
            print(f"{config:8} {way:6} {1e3 * t:8.1f} {r['batch'] / t:9.0f} {r['flops'] / t / 1e9:8.1f} "
                  f"{share} {r['faults']:11.0f}")
        lp, ls = best["plain"]["losses"], best["study"]["losses"]
        rel = max(abs(p - s) / abs(p) for p, s in zip(lp, ls))
        print(f"{config:8} speed-up study/plain: {best['plain']['s_per_step'] / best['study']['s_per_step']:.2f}x"
              f"   losses over {len(lp)} steps agree to {rel:.1e} relative (last {lp[-1]:.6f} vs {ls[-1]:.6f})")


if __name__ == "__main__":
    main()
