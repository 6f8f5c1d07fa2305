"""torch_load_safely: every file torch cannot read with weights_only=True is one line saying what the file is."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from aaconv.errors import CheckpointError
from aaconv.utils.state_dict import torch_load_safely


class Payload:
    """Any class outside torch's weights_only allow-list: loading it would mean unpickling code."""


def write_empty(path: Path) -> None:
    path.touch()


def write_text(path: Path) -> None:
    path.write_text('{"top1": 99.3}')  # a results.json passed by mistake


def write_plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"model": {}}))


def write_truncated(path: Path) -> None:
    torch.save({"model": {"w": torch.ones(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_pickled_object(path: Path) -> None:
    torch.save({"model": {"w": torch.ones(1)}, "extra": Payload()}, path)


@pytest.mark.parametrize(
    "write, reason",
    [
        (write_empty, "the file is empty"),
        (write_text, "not a file written by torch.save"),
        (write_plain_pickle, "not a file written by torch.save"),
        (write_truncated, "truncated or corrupt"),
        (write_pickled_object, "holds Python objects besides tensors"),
    ],
)
def test_unreadable_files_say_what_they_are(tmp_path: Path, write, reason: str) -> None:
    path = tmp_path / "file.pt"
    write(path)
    with pytest.raises(CheckpointError) as info:
        torch_load_safely(path, "checkpoint")
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: ") and reason in message
    assert "\n" not in message and "weights_only=False" not in message  # torch's own advice is the unsafe one


def test_a_tensor_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(3.0)}, path)
    torch.testing.assert_close(torch_load_safely(path, "weights")["w"], torch.arange(3.0))
