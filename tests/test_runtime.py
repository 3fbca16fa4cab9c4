"""stages.configure: the one place that sets threads, denormal flushing and GPU determinism."""

from __future__ import annotations

import torch

from conftest import stage_params
from genstudy import stages


def test_configure_sets_threads_and_flushes_denormals_and_says_so():
    threads = torch.get_num_threads()
    try:
        p = stage_params("flatness", threads=1, device="cpu")
        got = stages.configure(p)
        assert got == {"threads": 1, "flush_denormal": got["flush_denormal"], "deterministic_algorithms": False}
        assert torch.get_num_threads() == 1
        if got["flush_denormal"]:  # x86 with SSE3: a denormal float becomes 0
            assert torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0
        # a stage without a threads param keeps torch's default
        assert stages.configure(stage_params("sweep", device="cpu"))["threads"] == 1
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def test_run_json_records_every_installed_package():
    pk = stages.packages()
    assert pk["torch"] == torch.__version__.split("+")[0] and "pandas" in pk and "statsmodels" in pk


def test_calibration_measures_the_machine_at_the_stage_start():
    c = stages.calibrate(seconds=0.2, n=128)
    assert c["matmul_gflops"] > 0 and c["matmul_n"] == 128 and "load_average_1min" in c
