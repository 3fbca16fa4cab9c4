"""Fetching and loading, on small IDX files written by the tests.

Covers both sources (a local directory, and the mirrors through torchvision's
own downloader, pointed at an HTTP server on localhost), both data sets' code paths
(MNIST cannot be downloaded here), and every way a file can be bad.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import functools
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from genstudy import data
from genstudy.data import DataError

N_TRAIN, N_TEST = 12, 5


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_dataset(directory: Path, seed: int = 0) -> dict[str, str]:
    """Four gzipped IDX files in ``directory``; returns the SHA-256 of each decompressed file."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(N_TRAIN) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(N_TEST) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        hashes[name] = hashlib.sha256(raw).hexdigest()
    return hashes


@pytest.fixture
def mirror(tmp_path):
    """A directory served over HTTP on localhost: (directory, base URL)."""
    directory = tmp_path / "source"
    directory.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def tiny(mirror, monkeypatch):
    """The registry's fashion_mnist and mnist entries pointed at tiny files; returns their source dir."""
    src, url = mirror
    hashes = write_tiny_dataset(src)
    for name in ("fashion_mnist", "mnist"):
        spec = data.REGISTRY[name]
        monkeypatch.setitem(data.REGISTRY, name, dataclasses.replace(spec, sha256=hashes, local_dir=None))
        # torchvision's downloader, aimed at a "mirror" on this disk with the tiny files' md5s.
        cls = spec.torchvision_class
        monkeypatch.setattr(cls, "mirrors", [url])
        monkeypatch.setattr(cls, "resources", [
            (f"{n}.gz", hashlib.md5((src / f"{n}.gz").read_bytes()).hexdigest()) for n in data.FILES])
    return src


def test_registry_knows_both_datasets_with_a_hash_per_file():
    for name in ("fashion_mnist", "mnist"):
        spec = data.REGISTRY[name]
        assert set(spec.sha256) == set(data.FILES)
        assert all(len(h) == 64 for h in spec.sha256.values())


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_fetch_from_local_dir_then_load(tiny, tmp_path, dataset):
    root = tmp_path / "raw"
    target = data.fetch(dataset, root, local_dir=str(tiny))
    assert sorted(p.name for p in target.iterdir()) == sorted(data.FILES)
    train, test = data.load(dataset, root)
    assert train.x.shape == (N_TRAIN, 1, 28, 28) and test.x.shape == (N_TEST, 1, 28, 28)
    assert train.x.dtype == torch.float32 and 0 <= train.x.min() and train.x.max() <= 1
    assert train.y.tolist() == [i % 10 for i in range(N_TRAIN)]
    # Pixel values survive the round trip: x * 255 gives back the bytes written.
    raw = np.frombuffer(gzip.decompress((tiny / "train-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    assert torch.equal((train.x * 255).round().to(torch.uint8).flatten(), torch.from_numpy(raw.copy()))


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_fetch_downloads_through_torchvision_when_no_local_dir(tiny, tmp_path, dataset):
    root = tmp_path / "raw"
    data.fetch(dataset, root, local_dir=str(tmp_path / "nowhere"))
    train, test = data.load(dataset, root)
    assert len(train) == N_TRAIN and len(test) == N_TEST
    # Nothing but the verified files is left behind (no .gz, no staging directory).
    folder = root / data.REGISTRY[dataset].folder
    assert [p.name for p in folder.iterdir()] == ["raw"]
    assert sorted(p.name for p in (folder / "raw").iterdir()) == sorted(data.FILES)


def test_local_plain_files_are_accepted(tiny, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in data.FILES:
        (plain / f).write_bytes(gzip.decompress((tiny / f"{f}.gz").read_bytes()))
    data.fetch("fashion_mnist", tmp_path / "raw", local_dir=str(plain))
    assert len(data.load("fashion_mnist", tmp_path / "raw")[0]) == N_TRAIN


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    if how == "altered":
        raw[-1] ^= 0x01
        path.write_bytes(gzip.compress(bytes(raw)))
    elif how == "truncated_content":
        path.write_bytes(gzip.compress(bytes(raw[:-3])))
    elif how == "truncated_gzip":
        path.write_bytes(path.read_bytes()[:-20])
    elif how == "not_gzip":
        path.write_bytes(b"this is not a gzip file")


@pytest.mark.parametrize("name, how", [
    ("train-labels-idx1-ubyte", "altered"),  # one label byte
    ("t10k-images-idx3-ubyte", "altered"),   # one image byte
    *[("train-labels-idx1-ubyte", how) for how in ("truncated_content", "truncated_gzip", "not_gzip")]])
def test_a_bad_local_file_stops_fetch_and_leaves_nothing(tiny, tmp_path, name, how):
    _corrupt(tiny / f"{name}.gz", how)
    root = tmp_path / "raw"
    with pytest.raises(DataError) as e:
        data.fetch("fashion_mnist", root, local_dir=str(tiny))
    msg = str(e.value)
    assert name in msg
    if how in ("altered", "truncated_content"):
        expected = data.REGISTRY["fashion_mnist"].sha256[name]
        assert expected in msg and "got" in msg
    # No partial data set where a later stage would read it, and no staging leftovers.
    folder = root / "FashionMNIST"
    assert not (folder / "raw").exists()
    assert not any(folder.iterdir()) if folder.exists() else True
    with pytest.raises(DataError, match="not fetched"):
        data.load("fashion_mnist", root)


def test_a_bad_download_stops_fetch(tiny, tmp_path):
    name = "t10k-images-idx3-ubyte"
    # The mirror serves a file that passes torchvision's md5 of the .gz but not our SHA-256.
    _corrupt(tiny / f"{name}.gz", "altered")
    cls = data.REGISTRY["mnist"].torchvision_class
    cls.resources = [(f"{n}.gz", hashlib.md5((tiny / f"{n}.gz").read_bytes()).hexdigest())
                     for n in data.FILES]
    with pytest.raises(DataError, match=name):
        data.fetch("mnist", tmp_path / "raw", local_dir=str(tmp_path / "nowhere"))
    assert not (tmp_path / "raw" / "MNIST" / "raw").exists()


def test_a_missing_local_file_falls_back_to_the_mirrors(tiny, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-images-idx3-ubyte.gz").write_bytes((tiny / "train-images-idx3-ubyte.gz").read_bytes())
    data.fetch("fashion_mnist", tmp_path / "raw", local_dir=str(partial))
    assert len(data.load("fashion_mnist", tmp_path / "raw")[1]) == N_TEST


def test_no_source_reachable_says_what_was_tried(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.MNIST, "mirrors", [tvd.MNIST.mirrors[0] + "no-mirror/"])
    with pytest.raises(DataError) as e:
        data.fetch("mnist", tmp_path / "raw", local_dir=str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "nowhere" in msg and "no-mirror" in msg and "fetch.local_dirs.mnist" in msg


def test_a_missing_local_file_is_named_with_what_the_mirrors_said(tiny, tmp_path):
    (tiny / "t10k-labels-idx1-ubyte.gz").unlink()  # gone from the local dir and the mirror
    with pytest.raises(DataError) as e:
        data.fetch("fashion_mnist", tmp_path / "raw", local_dir=str(tiny))
    msg = str(e.value)
    first = msg.split("\n")[0]  # the missing file first, then the attempts
    assert first.startswith(f"cannot obtain fashion_mnist: local directory {tiny}: lacks t10k-labels-idx1-ubyte(.gz)")
    assert "train-images" not in first and "train-images" not in msg.split("\n")[1]  # only the missing one
    assert "mirrors http://127.0.0.1" in msg and "fetch.local_dirs.fashion_mnist" in msg


def _flip(offset: int):
    def corrupt(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        raw[offset] ^= 0x01
        path.write_bytes(bytes(raw))
    return corrupt


@pytest.mark.parametrize("name, corrupt", [
    ("train-images-idx3-ubyte", _flip(16 + 28 * 28 + 5)),  # one pixel of the second image
    ("t10k-labels-idx1-ubyte", _flip(8 + 2)),              # the third label
    ("train-labels-idx1-ubyte", lambda p: p.write_bytes(p.read_bytes()[:-4])),  # truncated
])
def test_load_refuses_a_file_altered_after_fetch(tiny, tmp_path, name, corrupt):
    root = tmp_path / "raw"
    target = data.fetch("fashion_mnist", root, local_dir=str(tiny))
    corrupt(target / name)
    with pytest.raises(DataError) as e:
        data.load("fashion_mnist", root)
    msg = str(e.value)
    expected = data.REGISTRY["fashion_mnist"].sha256[name]
    assert str(target / name) in msg and expected in msg
    assert f"got {data.sha256_of(target / name)}" in msg
    assert "dvc checkout data/raw" in msg and "dvc repro fetch" in msg


def test_load_names_a_missing_file_and_the_way_back(tiny, tmp_path):
    target = data.fetch("fashion_mnist", tmp_path / "raw", local_dir=str(tiny))
    (target / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as e:
        data.load("fashion_mnist", tmp_path / "raw")
    msg = str(e.value)
    assert "lacks train-labels-idx1-ubyte of fashion_mnist" in msg
    assert "t10k" not in msg and "dvc checkout data/raw" in msg


def test_refetch_is_a_no_op_and_repairs_an_altered_file(tiny, tmp_path):
    root = tmp_path / "raw"
    target = data.fetch("fashion_mnist", root, local_dir=str(tiny))
    f = target / "t10k-labels-idx1-ubyte"
    mtime = f.stat().st_mtime_ns
    data.fetch("fashion_mnist", root, local_dir=str(tiny))
    assert f.stat().st_mtime_ns == mtime
    f.write_bytes(b"garbage")
    data.fetch("fashion_mnist", root, local_dir=str(tiny))
    assert data.sha256_of(f) == data.REGISTRY["fashion_mnist"].sha256[f.name]


def test_unknown_dataset_is_named():
    with pytest.raises(DataError, match="cifar"):
        data.get_spec("cifar")


def test_split_is_seeded_disjoint_and_complete():
    d = data.Tensors(torch.arange(100).float().view(100, 1, 1, 1), torch.arange(100))
    a1, b1 = data.split(d, 0.25, seed=3)
    a2, b2 = data.split(d, 0.25, seed=3)
    assert torch.equal(a1.y, a2.y) and torch.equal(b1.y, b2.y)
    assert len(a1) == 75 and len(b1) == 25
    assert sorted(torch.cat([a1.y, b1.y]).tolist()) == list(range(100))
    assert not torch.equal(data.split(d, 0.25, seed=4)[1].y, b1.y)
