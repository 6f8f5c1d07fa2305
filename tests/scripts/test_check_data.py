"""scripts/check_data.py finds every bad file of a messy ImageFolder tree and a broken COCO layout in one run."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aaconv.tasks import build_task
from helpers.config import REPO
from helpers.images import write_messy_imagefolder

SCRIPT = REPO / "scripts/check_data.py"
_spec = importlib.util.spec_from_file_location("check_data", SCRIPT)
check_data_module = sys.modules["check_data"] = importlib.util.module_from_spec(_spec)  # picklable for --workers
_spec.loader.exec_module(check_data_module)


def check_data(*args: str, in_process: bool = True) -> subprocess.CompletedProcess:
    """Runs the script (in this process unless told otherwise: starting one costs seconds) -> exit status and output."""
    if not in_process:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": ""},
        )
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_data_module.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("workers, in_process", [("0", True), ("2", False)])
def test_imagefolder_every_bad_file_in_one_run(tmp_path: Path, workers: str, in_process: bool):
    bad = write_messy_imagefolder(tmp_path)  # CMYK, grayscale and PNG-named-JPEG are readable: not reported
    result = check_data(str(tmp_path), "--workers", workers, in_process=in_process)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert sorted(line.split(": ", 1)[0] for line in lines[:-1]) == sorted(map(str, bad))
    assert "checked 26 images" in lines[-1] and "4 unreadable" in lines[-1]
    assert sum("empty file (0 bytes)" in line for line in lines) == 2


def test_imagefolder_class_folders_in_one_split_only_are_named(tmp_path: Path):
    write_messy_imagefolder(tmp_path)
    (tmp_path / "val" / "n02").rename(tmp_path / "val" / "n03")  # same count, another name
    result = check_data(str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"class folders of {tmp_path / 'train'} and {tmp_path / 'val'} differ")
    assert "(only in train: n02; only in val: n03)" in lines[0]
    assert "4 unreadable or mis-sized, 1 class folder problems" in lines[-1]


def test_coco_images_sizes_and_annotations(tmp_path: Path, tiny_config):
    _, val = build_task(tiny_config("task=retinanet", "data=shapes_det")).build_datasets()
    root = tmp_path / "coco"
    shutil.copytree(val.root, root)
    clean = check_data(str(root), "--layout", "coco")
    assert clean.returncode == 0 and "0 unreadable or mis-sized, 0 annotation problems" in clean.stdout, clean.stdout

    file = root / "annotations/instances_val2017.json"
    data = json.loads(file.read_text())
    images = data["images"]
    (root / "val2017" / images[0]["file_name"]).write_bytes(b"")  # zero bytes
    truncated = root / "val2017" / images[1]["file_name"]
    truncated.write_bytes(truncated.read_bytes()[:200])
    images[2]["width"] += 1  # the file disagrees with the image
    data["annotations"][0]["category_id"] = 999
    data["annotations"][1]["bbox"] = [1, 2, 3]
    file.write_text(json.dumps(data))
    result = check_data(str(root), "--layout", "coco", "--workers", "2")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6, result.stdout
    assert "category_id 999 is not among" in result.stdout and "bbox [1, 2, 3] is not [x, y, w" in result.stdout
    for image in images[:3]:
        assert str(root / "val2017" / image["file_name"]) in result.stdout
    assert "but the annotation file says" in result.stdout
    assert "3 unreadable or mis-sized, 2 annotation problems" in lines[-1]


def test_missing_root_is_one_line(tmp_path: Path):
    result = check_data(str(tmp_path / "nothing"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "is not a folder" in result.stderr


def test_folder_without_images_is_an_error_not_a_clean_dataset(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    result = check_data(str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert f"no image files under {tmp_path}; the ImageFolder layout is" in result.stderr


def test_coco_entries_training_refuses_are_all_reported_in_one_run(tmp_path: Path, tiny_config):
    """Entries without a size, with a string id, a path out of the split's folder: every one listed, no
    traceback, and each is what CocoDetection would refuse."""
    _, val = build_task(tiny_config("task=retinanet", "data=shapes_det")).build_datasets()
    root = tmp_path / "coco"
    shutil.copytree(val.root, root)
    file = root / "annotations/instances_val2017.json"
    data = json.loads(file.read_text())
    del data["images"][0]["height"]
    data["images"][1]["file_name"] = "../../outside.jpg"
    data["annotations"][0]["image_id"] = str(data["annotations"][0]["image_id"])
    data["annotations"][1]["category_id"] = "1"
    data["annotations"][2]["bbox"] = None
    file.write_text(json.dumps(data))
    result = check_data(str(root), "--layout", "coco")
    assert result.returncode == 1 and result.stderr == "", result.stderr
    problems = result.stdout.strip().splitlines()[:-1]
    assert len(problems) == 5, result.stdout
    for expected in (
        "width x height",
        "'../../outside.jpg' is not a file name",
        "image_id '",
        "category_id '1'",
        "bbox None",
    ):
        assert sum(expected in line for line in problems) == 1, (expected, result.stdout)
