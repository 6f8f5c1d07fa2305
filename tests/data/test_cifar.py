"""CIFAR-100 from its python archive: pixel layout, labels, clear errors, and no code run from a pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from aaconv.data.cifar import CIFAR100, cifar_transform, load_pickle
from aaconv.errors import DataError


def write_archive(root: Path, images: int = 6) -> np.ndarray:
    """A CIFAR-100 archive in the original layout: red plane, green plane, blue plane, row-major."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    rows = pixels.transpose(0, 3, 1, 2).reshape(images, 3072)
    for split in ("train", "test"):
        content = {
            "data": rows,
            "fine_labels": list(range(images)),
            "coarse_labels": [0] * images,
            "filenames": [f"{i}.png" for i in range(images)],
            "batch_label": split,
        }
        (folder / split).write_bytes(pickle.dumps(content, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2))
    return pixels


class RunsCode:
    """Unpickling this calls os.system: what a malicious archive would do."""

    def __reduce__(self):
        return os.system, ("echo owned",)


def test_reads_images_labels_and_class_names(tmp_path: Path) -> None:
    pixels = write_archive(tmp_path)
    dataset = CIFAR100(tmp_path, "train")
    image, label = dataset[3]
    assert len(dataset) == 6 and label == 3 and dataset.classes[:2] == ["c0", "c1"]
    np.testing.assert_array_equal(np.asarray(image), pixels[3])


def test_transforms_give_normalised_32px_tensors(tmp_path: Path) -> None:
    write_archive(tmp_path)
    train = CIFAR100(tmp_path, "train", cifar_transform(True))
    test = CIFAR100(tmp_path, "test", cifar_transform(False))
    assert train[0][0].shape == test[0][0].shape == torch.Size([3, 32, 32])
    raw = torch.from_numpy(np.array(CIFAR100(tmp_path, "test")[0][0])).permute(2, 0, 1) / 255.0
    mean, std = torch.tensor([0.5071, 0.4865, 0.4409]), torch.tensor([0.2673, 0.2564, 0.2762])
    torch.testing.assert_close(test[0][0], (raw - mean[:, None, None]) / std[:, None, None])


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({"data": RunsCode()}, protocol=2))
    with pytest.raises(DataError, match="posix.system|os.system|nt.system"):
        load_pickle(path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    write_archive(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match=r"lacks meta.*cifar-100-python/\{train,test,meta\}"):
        CIFAR100(tmp_path, "train")
    with pytest.raises(DataError, match="lacks train, test, meta"):
        CIFAR100(tmp_path / "elsewhere", "train")


def test_truncated_pickle_is_a_data_error(tmp_path: Path) -> None:
    write_archive(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a CIFAR-100 python pickle"):
        CIFAR100(tmp_path, "train")
