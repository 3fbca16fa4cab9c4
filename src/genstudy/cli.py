"""What every stage script shares: a clean exit on bad input, and a record of the run's cost."""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .data import DataError
from .outputs import write_json
from .params import ParamsError


def run_info() -> dict:
    """Where a stage ran: device and library versions."""
    import torch
    import torchvision
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"device": gpu or f"cpu ({torch.get_num_threads()} threads)",
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


def run_stage(main: Callable[[], None], stage: str | None = None) -> None:
    """Run a stage's ``main`` and write ``reports/<stage>/run.json`` (wall time, device, versions).

    Bad params or data end the stage with one clear message and exit code 2.
    The stage name defaults to the script's file name (``stages/<stage>.py``).
    """
    stage = stage or Path(sys.argv[0]).stem
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        main()
    except (ParamsError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    wall = time.perf_counter() - t0
    write_json(Path("reports") / stage / "run.json", {
        "stage": stage, "wall_time_s": round(wall, 2),
        "started": started.isoformat(timespec="seconds"), **run_info()})
    print(f"{stage}: done in {wall:.0f} s")
