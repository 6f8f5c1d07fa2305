"""eval.py's failure modes: missing, foreign, mismatched and malicious checkpoints give errors that name the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from aaconv.data.transforms import classification_transform, eval_transform
from aaconv.engine.checkpoint import load_checkpoint, save_checkpoint
from aaconv.engine.config_checks import EVAL_CHECKS, check_config
from aaconv.engine.evaluate import run_config
from aaconv.engine.stored_config import known_targets
from aaconv.errors import CheckpointError, ConfigError
from aaconv.models import create_model
from aaconv.runs import evaluate as eval_py_evaluate
from aaconv.tasks import build_task, task_from_saved_config
from aaconv.tasks.classification import ClassificationTask
from helpers.config import CONFIGS, REPO, compose_config


def eval_config(checkpoint: Path):
    return OmegaConf.create(
        {
            "checkpoint": str(checkpoint),
            "data_root": None,
            "batch_size": None,
            "workers": None,
            "device": "cpu",
            "weights": "auto",
        }
    )


def evaluate(cfg, output_dir: Path) -> dict:
    """What eval.py does with its config."""
    return eval_py_evaluate(cfg, load_checkpoint(cfg.checkpoint), torch.device("cpu"), output_dir)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass the last.pt"):
        evaluate(eval_config(tmp_path / "last.pt"), tmp_path)


def test_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*: not a file written by torch.save"):
        evaluate(eval_config(path), tmp_path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "payload": Path("/etc/passwd")}, path)  # a non-tensor object needs unpickling
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* read with weights_only=True"):
        evaluate(eval_config(path), tmp_path)


def test_a_run_folder_given_as_checkpoint_is_named_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder; pass the last.pt or best.pt inside it"):
        evaluate(eval_config(tmp_path), tmp_path)


def test_checkpoint_of_another_model_lists_the_keys(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config("backbone=resnet18")
    other = create_model("resnet34", num_classes=6)
    path = save_checkpoint(
        {"model": other.state_dict(), "epoch": 1, "config": OmegaConf.to_container(cfg, resolve=True)},
        tmp_path / "last.pt",
    )
    with pytest.raises(CheckpointError, match=r"does not fit this model.*unexpected \d+ \['layer1.2"):
        evaluate(eval_config(path), tmp_path)


def test_checkpoint_never_fetches_pretrained_weights_and_reads_older_detection_configs(tmp_path: Path, tiny_config):
    cfg = tiny_config("task=retinanet", "data=shapes_det", "data.detection.fpn_channels=32")
    config = OmegaConf.to_container(cfg, resolve=True)
    config["backbone"]["weights"] = "torchvision:no_such_model"  # would fail if it were read
    config["task"]["weights"] = None  # detection configs kept it here before backbone.weights
    model = build_task(cfg).build_model()
    path = save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": config}, tmp_path / "last.pt")
    results = evaluate(eval_config(path), tmp_path / "eval")
    assert results["val_images"] == 16 and -1 <= results["AP"] <= 1


def test_empty_checkpoint_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.touch()
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*last.pt: \w+"):
        evaluate(eval_config(path), tmp_path)


def crafted_checkpoint(path: Path, config: dict) -> Path:
    """A checkpoint that torch.load(weights_only=True) reads without complaint: only the config is hostile."""
    return save_checkpoint({"model": {}, "epoch": 1, "config": config}, path)


def copy_payload(src: Path, dst: Path) -> dict:
    return {"_target_": "shutil.copyfile", "src": str(src), "dst": str(dst)}


def test_eval_py_refuses_a_checkpoint_whose_config_would_run_code(tmp_path: Path, tiny_config) -> None:
    config = OmegaConf.to_container(tiny_config(), resolve=True)
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("secret")
    config["task"]["label_smoothing"] = copy_payload(secret, stolen)
    path = crafted_checkpoint(tmp_path / "last.pt", config)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"checkpoint={path}", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {path} is refused: its config has task.label_smoothing._target_='shutil.copyfile' "
        "(only the project's own optim/schedule/task targets are accepted); a checkpoint's config is read as plain "
        "values only, so use a checkpoint written by train.py"
    ]
    assert not stolen.exists()


@pytest.mark.parametrize("where", ["interpolation", "unknown_task", "nested_in_data", "args"])
def test_no_stored_config_route_reaches_instantiate(tmp_path: Path, tiny_config, where: str) -> None:
    config = OmegaConf.to_container(tiny_config(), resolve=True)
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("secret")
    if where == "interpolation":  # a resolver that builds a `_target_` node when the config is resolved
        payload = f"{{_target_: shutil.copyfile, src: {secret}, dst: {stolen}}}"
        config["task"]["label_smoothing"] = f"${{oc.create:{payload}}}"
    elif where == "unknown_task":
        config["task"] = copy_payload(secret, stolen)
    elif where == "nested_in_data":
        config["data"]["transform"]["train"]["scale"] = copy_payload(secret, stolen)
    else:  # an allowed target, but positional arguments smuggled in
        config["task"]["_args_"] = [copy_payload(secret, stolen)]
    path = crafted_checkpoint(tmp_path / "last.pt", config)
    with pytest.raises(CheckpointError, match="is refused: its config has"):
        evaluate(eval_config(path), tmp_path)
    assert not stolen.exists()


def _image(size: tuple[int, int] = (50, 40)):
    g = torch.Generator().manual_seed(0)
    return Image.fromarray(torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=g).numpy())


@pytest.mark.parametrize(
    ("data", "size", "before"),
    [
        ("shapes", 32, {"crop_pct": 1.0, "interpolation": "bilinear"}),
        ("imagenet", 224, {"crop_pct": 0.875, "interpolation": "bicubic"}),
    ],
)
def test_default_eval_transform_is_unchanged(data: str, size: int, before: dict) -> None:
    """data.eval_image_size: null and data.crop_pct at the recipe's value give the transform of the configs before
    them (transform.eval.crop_pct), and a stored config of that time still reads its own crop_pct."""
    cfg = compose_config(f"data={data}", "data.root=/nowhere")
    expected = classification_transform(size, False, before)(_image())
    assert torch.equal(eval_transform(cfg.data)(_image()), expected)
    older = OmegaConf.to_container(cfg.data, resolve=True)
    del older["eval_image_size"], older["crop_pct"]
    older["transform"]["eval"]["crop_pct"] = before["crop_pct"]
    assert torch.equal(eval_transform(older)(_image()), expected)


def test_eval_size_and_crop_reach_the_validation_images(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config()
    model = build_task(cfg).build_model()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": config}, tmp_path / "last.pt")
    overrides = {"eval_image_size": 48, "crop_pct": 0.5}
    run_cfg = run_config(load_checkpoint(path), path, overrides, known_targets(CONFIGS))
    assert (run_cfg.data.eval_image_size, run_cfg.data.crop_pct, run_cfg.data.image_size) == (48, 0.5, 32)
    _, val_set = task_from_saved_config(run_cfg).build_datasets()
    image, _ = val_set[0]
    assert image.shape == (3, 48, 48)
    resized = eval_transform({**config["data"], "eval_image_size": 48, "crop_pct": 1.0})(_image((96, 96)))
    cropped = eval_transform({**config["data"], "eval_image_size": 48, "crop_pct": 0.5})(_image((96, 96)))
    assert not torch.equal(resized, cropped)  # 0.5: the centre half of the image, enlarged


def test_eval_size_is_refused_for_detection_and_checked(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config("task=retinanet", "data=shapes_det", "data.detection.fpn_channels=32")
    config = OmegaConf.to_container(cfg, resolve=True)
    model = build_task(cfg).build_model()
    path = save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": config}, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="detection run resizes with its detector"):
        run_config(load_checkpoint(path), path, {"eval_image_size": 128, "crop_pct": None}, known_targets(CONFIGS))
    for key, value in [("eval_image_size", 0), ("crop_pct", 0), ("crop_pct", 1.5)]:
        bad = eval_config(path)
        bad[key] = value
        with pytest.raises(ConfigError, match=f"{key}={value} is not valid"):
            check_config(bad, EVAL_CHECKS)


def test_eval_size_is_refused_for_cifar() -> None:
    data = {"format": "cifar", "root": "/nowhere", "num_classes": 100, "eval_image_size": 48, "transform": {}}
    task = ClassificationTask(backbone={"name": "resnet18"}, attention={"variant": "none"}, data=data)
    with pytest.raises(ConfigError, match="CIFAR-100 is evaluated on its 32 px images"):
        task.build_datasets()


def test_weights_auto_evaluates_the_ema_when_the_checkpoint_has_it(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config()
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    model = build_task(cfg).build_model().state_dict()
    torch.manual_seed(1)
    ema = build_task(cfg).build_model().state_dict()
    both = save_checkpoint({"model": model, "ema": ema, "epoch": 1, "config": config}, tmp_path / "last.pt")
    ema_as_model = save_checkpoint({"model": ema, "epoch": 1, "config": config}, tmp_path / "ema_as_model.pt")

    def run(path: Path, weights: str) -> dict:
        eval_cfg = compose_config(f"checkpoint='{path}'", f"weights={weights}", "device=cpu", config_name="eval")
        check_config(eval_cfg, EVAL_CHECKS)
        return eval_py_evaluate(eval_cfg, load_checkpoint(path), torch.device("cpu"), tmp_path / weights)

    auto, model_only, reference = run(both, "auto"), run(both, "model"), run(ema_as_model, "auto")
    assert (auto["weights"], model_only["weights"], reference["weights"]) == ("ema", "model", "model")
    assert auto["val_loss"] == reference["val_loss"] != model_only["val_loss"]
    assert run(both, "ema")["val_loss"] == auto["val_loss"]
    with pytest.raises(CheckpointError, match=r"has no EMA weights \(trained with trainer.ema.enabled=false\); use "):
        run(ema_as_model, "ema")
    with pytest.raises(ConfigError, match="weights=emma is not valid: it must be auto or ema or model"):
        run(both, "emma")
