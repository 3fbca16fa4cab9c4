"""fetch: put the verified IDX files of the configured data sets under data/raw."""

from pathlib import Path

from genstudy import data, params
from genstudy.cli import run_stage


class FetchParams(params.Section):
    # Data sets the experiments may use (each experiment's `dataset` must be one of them).
    datasets: list[params.DatasetName] = ["fashion_mnist"]
    # Per data set, a directory holding the four IDX files (.gz or not), tried before the mirrors.
    # null: the registry's default (Debian's dataset-fashion-mnist for fashion_mnist).
    local_dirs: dict[params.DatasetName, str | None] = {}
    root: str = "data/raw"


def main() -> None:
    p = params.load("fetch", FetchParams)
    for name in p.datasets:
        where = data.fetch(name, Path(p.root), p.local_dirs.get(name))
        print(f"fetch: {name} verified in {where}")


if __name__ == "__main__":
    run_stage(main)
