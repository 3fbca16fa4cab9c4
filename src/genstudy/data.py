"""Data sets: the registry, verified fetching, and loading into tensors.

Every file of a data set is known by the SHA-256 of its *decompressed* IDX
content, so a file is accepted whatever gzip produced it (Debian's package
recompresses Fashion-MNIST; the mirrors' gz files differ byte for byte).

Layout under ``root`` (default ``data/raw``) is torchvision's own,
``<root>/<ClassName>/raw/<file>`` (torchvision downloads into it). :func:`load`
checks every file against the registry each time a stage reads it (55 MB of
Fashion-MNIST hash in about 0.12 s on this project's CPU) and parses the very
bytes it hashed, so a file altered after ``fetch`` is refused, never trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.datasets as tvd

from .errors import StudyError

RAW = Path("data/raw")  # where fetch puts the data sets (dvc.yaml: the fetch stage's output)
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    torchvision_class: type  # a torchvision.datasets.MNIST subclass: knows mirrors and the loader
    sha256: dict[str, str]   # decompressed file name -> SHA-256 of its content
    local_dir: str | None    # where a system package puts the files, if any
    classes: tuple[str, ...]
    n_train: int = 60_000    # images in the train and test splits
    n_test: int = 10_000

    @property
    def folder(self) -> str:
        return self.torchvision_class.__name__


REGISTRY: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        torchvision_class=tvd.FashionMNIST,
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        local_dir="/usr/share/datasets/fashion-mnist",  # Debian: dataset-fashion-mnist
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetSpec(
        name="mnist",
        torchvision_class=tvd.MNIST,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        local_dir=None,
        classes=tuple(str(d) for d in range(10)),
    ),
}


class DataError(StudyError, RuntimeError):
    """A data set file is missing, corrupt, or could not be obtained."""


# What to do when data/raw no longer matches the registry: data/raw is the fetch stage's
# DVC output, so DVC's cache holds the good copy, and fetch can rebuild it from its sources.
RECOVER = ("Restore it with `dvc checkout data/raw` (from DVC's cache) "
           "or rebuild it with `dvc repro fetch`.")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decompress_into(src: Path, dst: Path) -> None:
    """Copy ``src`` (``.gz`` or plain) to ``dst`` decompressed."""
    opener = gzip.open if src.suffix == ".gz" else open
    try:
        with opener(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as e:  # truncated or not a gzip file
        raise DataError(f"{src}: cannot be read ({e}). Replace it with a good copy.") from e


def _find_local(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _verify(path: Path, name: str, expected: str, origin: str, remedy: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{name} (from {origin}) is corrupt or altered: "
            f"expected SHA-256 {expected}, got {actual}. {remedy}")


def _stage_from_local(spec: DatasetSpec, local: Path, staging: Path) -> None:
    remedy = (f"Replace it with a good copy, or set fetch.local_dirs.{spec.name} in "
              "params.yaml to another directory (one that does not exist: download instead).")
    for name, expected in spec.sha256.items():
        src = _find_local(local, name)
        _decompress_into(src, staging / name)
        _verify(staging / name, name, expected, str(src), remedy)


def _local_problem(spec: DatasetSpec, local: Path | None) -> str | None:
    """Why ``local`` cannot supply all four files, naming the missing ones (None: it can)."""
    if local is None:
        return "no local directory set"
    if not local.is_dir():
        return f"local directory {local}: missing"
    lacking = [f"{n}(.gz)" for n in spec.sha256 if not _find_local(local, n)]
    return f"local directory {local}: lacks {', '.join(lacking)}" if lacking else None


def _stage_from_mirrors(spec: DatasetSpec, staging: Path) -> None:
    """Download through torchvision's own downloader (mirrors and md5 of the .gz files)."""
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        try:
            spec.torchvision_class(root=tmp, train=True, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variously
            raise DataError(f"download failed: {e}") from e
        got = Path(tmp) / spec.folder / "raw"
        for name, expected in spec.sha256.items():
            _verify(got / name, name, expected, "the mirrors",
                    "Try again later, or provide the files in a local directory.")
            (got / name).replace(staging / name)


def fetch(dataset: str, root: Path = RAW, local_dir: str | None = None) -> Path:
    """Make ``<root>/<ClassName>/raw`` hold the verified, decompressed IDX files.

    Sources, in order: ``local_dir`` (default: the registry's system package
    directory) when it holds all four files, then the official mirrors. Files
    are assembled and verified in a staging directory and moved into place
    only when all four are good, so a failure never leaves a partial data set
    where a later stage would read it.
    """
    spec = get_spec(dataset)
    target = Path(root) / spec.folder / "raw"
    if target.is_dir() and all(
            (target / n).is_file() and sha256_of(target / n) == h for n, h in spec.sha256.items()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    local = local_dir or spec.local_dir
    local = Path(local) if local else None
    tried = []
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    staging.chmod(0o755)
    try:
        problem = _local_problem(spec, local)
        if problem is None:
            _stage_from_local(spec, local, staging)
        else:
            tried.append(problem)
            try:
                _stage_from_mirrors(spec, staging)
            except DataError as e:
                mirrors = ", ".join(spec.torchvision_class.mirrors)
                tried.append(f"mirrors {mirrors}: {e}")
                raise DataError(  # what is missing first, then every attempt
                    f"cannot obtain {dataset}: {problem}, and the mirrors failed. Tried:\n  - " + "\n  - ".join(tried) +
                    f"\nProvide the four files {', '.join(f + '.gz' for f in FILES)} in a directory "
                    f"and set fetch.local_dirs.{dataset} to it in params.yaml.") from None
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return REGISTRY[dataset]
    except KeyError:
        raise DataError(f"unknown data set {dataset!r}; known: {', '.join(REGISTRY)}") from None


@dataclass
class Tensors:
    """A data set held as two tensors: inputs ``x`` (N, 1, 28, 28) float and labels ``y`` (N,) long."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Tensors":
        return Tensors(self.x.to(device), self.y.to(device))

    def head(self, n: int | None) -> "Tensors":
        """The first ``n`` examples (all when ``n`` is None), as the notebooks slice ``x[:n]``."""
        return self if n is None else Tensors(self.x[:n], self.y[:n])

    def take(self, index: torch.Tensor) -> "Tensors":
        return Tensors(self.x[index], self.y[index])


def _read_verified(path: Path, expected: str) -> bytes:
    """The content of ``path``, refused unless its SHA-256 is ``expected``.

    Returns the bytes it hashed: what the caller parses is what was verified.
    """
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise DataError(f"{path} is corrupt or altered ({len(content)} bytes): expected SHA-256 "
                        f"{expected}, got {actual}. Nothing was trained on it. {RECOVER}")
    return content


def _idx_array(content: bytes) -> torch.Tensor:
    """The uint8 array of an IDX file: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    ndim = content[3]
    dims = struct.unpack_from(f">{ndim}I", content, 4)
    return torch.frombuffer(bytearray(content), dtype=torch.uint8, offset=4 + 4 * ndim).view(dims)


def load(dataset: str, root: Path = RAW) -> tuple[Tensors, Tensors]:
    """The train and test sets as float tensors scaled to [0, 1], from files matching the registry."""
    spec = get_spec(dataset)
    raw = Path(root) / spec.folder / "raw"
    missing = [n for n in spec.sha256 if not (raw / n).is_file()]
    if len(missing) == len(spec.sha256):
        raise DataError(f"{dataset} is not fetched ({raw} lacks {', '.join(missing)}): "
                        f"add it to fetch.datasets in params.yaml and run `dvc repro fetch` (it downloads "
                        f"from the mirrors; offline, set fetch.local_dirs.{dataset} to a directory holding "
                        f"its four IDX .gz files)")
    if missing:
        raise DataError(f"{raw} lacks {', '.join(missing)} of {dataset}. {RECOVER}")
    arrays = {n: _idx_array(_read_verified(raw / n, h)) for n, h in spec.sha256.items()}
    train, test = (Tensors(arrays[f"{part}-images-idx3-ubyte"].float().div_(255.0).unsqueeze(1),
                           arrays[f"{part}-labels-idx1-ubyte"].long()) for part in ("train", "t10k"))
    return train, test


def split(data: Tensors, fraction: float, seed: int) -> tuple[Tensors, Tensors]:
    """A seeded random split into (first, second) with ``fraction`` of the examples in the second."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    n_second = int(round(len(data) * fraction))
    return data.take(perm[n_second:]), data.take(perm[:n_second])


def standardize(train: Tensors, *others: Tensors, eps: float = 1e-8) -> list[Tensors]:
    """Per-pixel standardisation with ``train``'s mean and std, applied to ``train`` and ``others``.

    A pixel whose std over ``train`` is (near) zero (constant, e.g. an always
    black corner of a small subset) is only centred: its std is taken as 1.
    """
    mean = train.x.mean(dim=0, keepdim=True)
    std = train.x.std(dim=0, unbiased=False, keepdim=True)  # numpy's std, as the notebook
    std = torch.where(std > eps, std, torch.ones_like(std))
    return [Tensors((d.x - mean) / std, d.y) for d in (train, *others)]


def split_tasks(data: Tensors, b_classes: tuple[int, int] = (4, 5),
                n_classes: int = 10) -> tuple[Tensors, Tensors]:
    """Task A (every class but ``b_classes``, labels re-indexed 0..n_classes-3 in class order)
    and task B (only ``b_classes``: the first is label 0, the second label 1), order kept."""
    first, second = b_classes
    in_b = (data.y == first) | (data.y == second)
    a_classes = [c for c in range(n_classes) if c not in b_classes]
    remap = torch.full((n_classes,), -1, dtype=torch.long, device=data.y.device)
    remap[a_classes] = torch.arange(len(a_classes), device=data.y.device)
    a = Tensors(data.x[~in_b], remap[data.y[~in_b]])
    b = Tensors(data.x[in_b], (data.y[in_b] == second).long())
    return a, b
