"""scripts/export.py: a checkpoint -> model.safetensors + config.yaml that load back to identical outputs."""

import importlib.util
from pathlib import Path

import pytest
import timm
import torch
import yaml
from omegaconf import OmegaConf

from aaconv.engine.checkpoint import save_checkpoint
from aaconv.errors import CheckpointError, ConfigError, RunDirError
from aaconv.models.detection import build_backbone
from aaconv.models.pretrained import load_pretrained
from aaconv.tasks import build_task
from helpers.config import REPO

spec = importlib.util.spec_from_file_location("export_script", REPO / "scripts" / "export.py")
export_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_script)


@pytest.fixture
def checkpoint(tiny_config, tmp_path: Path):
    """(config, model, path) of a checkpoint of an AA-ResNet-18 shapes classifier with random weights."""
    cfg = tiny_config("attention=aa")
    torch.manual_seed(0)
    model = build_task(cfg).build_model().eval()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 1}, tmp_path / "run" / "last.pt")
    return cfg, model, path


def test_export_round_trip_gives_identical_outputs(checkpoint, capsys):
    cfg, model, path = checkpoint
    export_script.main([str(path)])
    weights, config = (path.parent / "export" / name for name in ("model.safetensors", "config.yaml"))
    assert capsys.readouterr().out.split() == [str(weights), str(config)]
    assert yaml.safe_load(config.read_text()) == OmegaConf.to_container(cfg, resolve=True)

    torch.manual_seed(1)
    loaded = build_task(cfg).build_model().eval()
    load_pretrained(loaded, weights, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    timm_model = timm.create_model(
        "aa_resnet18", checkpoint_path=str(weights), num_classes=cfg.data.num_classes, input_size=cfg.data.image_size
    ).eval()
    with torch.no_grad():
        assert torch.equal(timm_model(x), model(x))


def test_detection_backbone_takes_an_export(checkpoint, tmp_path):
    _, model, path = checkpoint
    weights, _ = export_script.export(path, tmp_path / "out")
    body = build_backbone({"name": "resnet18"}, "aa", max_size=64, weights=str(weights), frozen_bn=False)
    for key, value in body.state_dict().items():
        if "rel_" not in key:  # AA's relative tables are sized to the detection input and load adapted
            assert torch.equal(value, model.state_dict()[key]), key


def test_export_errors_are_one_line(checkpoint, tmp_path):
    _, _, path = checkpoint
    with pytest.raises(CheckpointError, match="no EMA weights .*; export without --ema"):
        export_script.export(path, tmp_path / "out", ema=True)
    (tmp_path / "taken").write_text("a file where the output folder would go")
    with pytest.raises(RunDirError, match="cannot write the export into .*taken .*pass --output with a writable"):
        export_script.export(path, tmp_path / "taken")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_pretrained(torch.nn.Linear(2, 2), bad)


def test_onnx_export_matches_onnxruntime(tiny_config, tmp_path, capsys):
    """--onnx on a classifier with one part of every kind (AW conv branch, AA, CBAM): logits within 1e-4 of eager."""
    onnxruntime = pytest.importorskip("onnxruntime")
    cfg = tiny_config("attention=aw_aa", "attention.variant=aw+aa+cbam")
    torch.manual_seed(0)
    model = build_task(cfg).build_model().eval()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 1}, tmp_path / "run" / "last.pt")
    export_script.main([str(path), "--onnx"])
    onnx_path = path.parent / "export" / "model.onnx"
    assert capsys.readouterr().out.split()[-1] == str(onnx_path)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    size = cfg.data.image_size
    x = torch.randn(1, 3, size, size)
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert logits.shape == (1, cfg.data.num_classes) and abs(logits - expected).max() < 1e-4


def test_onnx_export_of_a_detector_is_a_one_line_refusal(tiny_config, tmp_path):
    cfg = tiny_config("experiment=retinanet_shapes")
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": {}, "config": config, "epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="ONNX export of a detector is not supported: .*") as error:
        export_script.export_onnx(path, tmp_path / "out")
    assert "\n" not in str(error.value)
