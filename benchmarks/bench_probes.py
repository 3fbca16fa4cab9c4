"""Figure 5's ten probes trained all at once vs one at a time (the notebook's way).

Same frozen convnet, same data, same number of epochs (no early stopping), same run:
  all at once   one pass of the frozen model per batch feeds every probe; the deepest
                points cached within the memory budget, the rest streamed
  one at a time each probe trained on its own, the whole model run for every batch
                (the notebook's way; it also re-ran the model for every probe and epoch)
Also shown: all at once with no cache (pure streaming), and one at a time with the
forward pass stopped at the probe's point (what the notebook's truncated call did).

    python benchmarks/bench_probes.py [--n 2048] [--epochs 3] [--cache-mb 768]
"""

import argparse
import time

from genstudy import data, models
from genstudy.probes import ProbeConfig, train_probes


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048, help="probe training images (1/6 validation)")
    ap.add_argument("--test", type=int, default=1024, help="test images")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cache-mb", type=float, default=768)
    a = ap.parse_args()
    train, test = data.load("fashion_mnist")
    train, test = train.head(a.n), test.head(a.test)
    model = models.seeded(0, models.convnet_e7)
    points = models.CONVNET_E7_POINTS

    def cfg(cache_mb, truncate=True):
        return ProbeConfig(epochs=a.epochs, patience=a.epochs + 1, batch_size=512,
                           cache_bytes=int(cache_mb * 2**20), truncate=truncate)

    def one_at_a_time(truncate):
        return [r for p, m in points.items()
                for r in train_probes(model, {p: m}, train, test, cfg(0, truncate), 0, progress=False)]

    runs = {
        "all at once (cache)": lambda: train_probes(model, points, train, test, cfg(a.cache_mb), 0,
                                                    progress=False),
        "all at once (streamed)": lambda: train_probes(model, points, train, test, cfg(0), 0,
                                                       progress=False),
        "one at a time (whole model)": lambda: one_at_a_time(False),
        "one at a time (truncated)": lambda: one_at_a_time(True),
    }
    times = {}
    for name, fn in runs.items():
        times[name], rows = timed(fn)
        errs = " ".join(f"{r['test_error']:.3f}" for r in rows)
        print(f"{name:30s} {times[name]:7.1f} s   test errors: {errs}", flush=True)
    base = times["one at a time (whole model)"]
    print(f"\n{len(points)} probes, {a.n} images, {a.epochs} epochs")
    for name, t in times.items():
        print(f"speed-up of {name:30s} over one at a time (whole model): {base / t:5.1f}x")
    print(f"RATIO all at once (cache) vs one at a time (whole model): "
          f"{base / times['all at once (cache)']:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
