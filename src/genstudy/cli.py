"""What every stage script shares: a clean exit on bad input."""

from __future__ import annotations

import sys
from typing import Callable

from .data import DataError
from .params import ParamsError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; bad params or data end it with one clear message, exit code 2."""
    try:
        main()
    except (ParamsError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
