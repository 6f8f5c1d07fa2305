"""scripts/export.py: a checkpoint -> model.safetensors + config.yaml that load back to identical outputs."""

import importlib.util
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from omegaconf import OmegaConf
from safetensors import safe_open

from aaconv.engine.checkpoint import save_checkpoint
from aaconv.errors import CheckpointError, ConfigError, RunDirError
from aaconv.models.detection import build_backbone
from aaconv.models.pretrained import load_pretrained
from aaconv.runs import config_options
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
    run_config = OmegaConf.to_container(cfg, resolve=True)
    del run_config["callbacks"]  # training-only: a rebuilt run drops it unread (aaconv/engine/stored_config.py)
    assert yaml.safe_load(config.read_text()) == run_config

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


@pytest.mark.parametrize("task", config_options("task"))
def test_every_task_exports_its_weights_and_onnx_works_or_says_why(task, tiny_config, tmp_path):
    """model.safetensors of every task reloads into the task's model with identical outputs; --onnx exports a
    classifier (tested against onnxruntime below) and refuses a detector in one line."""
    cfg = tiny_config(f"task={task}", *(() if task == "classification" else ("data=shapes_det",)))
    torch.manual_seed(0)
    model = build_task(cfg).build_model().eval()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 1}, tmp_path / "last.pt")
    weights, _ = export_script.export(path, tmp_path / "export")
    torch.manual_seed(1)
    loaded = build_task(cfg).build_model().eval()
    load_pretrained(loaded, weights, strict=True)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        if task == "classification":
            assert torch.equal(loaded(images), model(images))
        else:
            for got, expected in zip(loaded(list(images)), model(list(images)), strict=True):
                assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    if task != "classification":
        with pytest.raises(ConfigError, match="^ONNX export of a detector is not supported: [^\n]*$"):
            export_script.export_onnx(path, tmp_path / "export")


def test_the_ema_weights_are_exported_by_default_and_the_metadata_says_which(checkpoint, tmp_path):
    cfg, model, path = checkpoint
    torch.manual_seed(1)
    ema = build_task(cfg).build_model().state_dict()
    with_ema = save_checkpoint({**torch.load(path, weights_only=True), "ema": ema}, tmp_path / "ema" / "last.pt")
    exported = {}
    for args in ([], ["--ema"], ["--weights", "ema"], ["--weights", "model"]):
        export_script.main([str(with_ema), "--output", str(tmp_path / "out"), *args])
        with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
            exported[" ".join(args)] = (f.metadata()["weights"], f.get_tensor("conv1.weight"))
    for args, (weights, tensor) in exported.items():
        expected = model.state_dict() if args == "--weights model" else ema
        assert weights == ("model" if args == "--weights model" else "ema")
        assert torch.equal(tensor, expected["conv1.weight"]), args
    export_script.main([str(path), "--output", str(tmp_path / "plain")])  # auto, without EMA: the model's
    with safe_open(tmp_path / "plain" / "model.safetensors", "pt") as f:
        assert f.metadata()["weights"] == "model"


def test_detection_backbone_takes_an_export(checkpoint, tmp_path):
    _, model, path = checkpoint
    weights, _ = export_script.export(path, tmp_path / "out")
    body = build_backbone({"name": "resnet18"}, "aa", max_size=64, weights=str(weights), frozen_bn=False)
    for key, value in body.state_dict().items():
        if "rel_" not in key:  # AA's relative tables are sized to the detection input and load adapted
            assert torch.equal(value, model.state_dict()[key]), key


def test_export_errors_are_one_line(checkpoint, tmp_path):
    _, _, path = checkpoint
    with pytest.raises(CheckpointError, match=r"no EMA weights .*; use --weights=model or --weights=auto"):
        export_script.export(path, tmp_path / "out", weights="ema")
    (tmp_path / "taken").write_text("a file where the output folder would go")
    with pytest.raises(RunDirError, match="cannot write the export into .*taken .*pass --output with a writable"):
        export_script.export(path, tmp_path / "taken")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_pretrained(torch.nn.Linear(2, 2), bad)


def _classifier_checkpoint(tiny_config, tmp_path: Path, *overrides: str):
    """(config, eval model, checkpoint path) of a shapes classifier with random weights."""
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    model = build_task(cfg).build_model().eval()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 1}, tmp_path / "run" / "last.pt")
    return cfg, model, path


ONNX_CASES = {
    # one part of every kind (AW conv branch, AA, CBAM); AW on its loop over the batch, which the export replaces
    "aw+aa+cbam": ("attention=aw_aa", "attention.variant=aw+aa+cbam", "attention.aw.impl=per_sample"),
    "se": ("attention=se",),  # no AA or AW: height and width dynamic too
}


@pytest.mark.parametrize("case", ONNX_CASES)
def test_onnx_export_is_one_file_with_a_dynamic_batch_matching_eager(case, tiny_config, tmp_path, capsys):
    """--onnx: model.onnx alone (weights inside), run by onnxruntime at batch 1 and 3 (and, without AA / AW, at
    other sizes) with logits within 1e-4 of eager."""
    onnxruntime = pytest.importorskip("onnxruntime")
    cfg, model, path = _classifier_checkpoint(tiny_config, tmp_path, *ONNX_CASES[case])
    export_script.main([str(path), "--onnx"])
    onnx_path = path.parent / "export" / "model.onnx"
    assert capsys.readouterr().out.split()[-1] == str(onnx_path)
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["config.yaml", "model.onnx", "model.safetensors"]
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    size = cfg.data.image_size
    dynamic_size = case == "se"
    spatial = ["height", "width"] if dynamic_size else [size, size]
    assert session.get_inputs()[0].shape == ["batch", 3, *spatial]
    shapes = [(1, size), (3, size)] + ([(2, 24), (3, 40)] if dynamic_size else [])
    for batch, side in shapes:
        x = torch.randn(batch, 3, side, side)
        (logits,) = session.run(["logits"], {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert logits.shape == (batch, cfg.data.num_classes) and abs(logits - expected).max() < 1e-4, (batch, side)


def test_onnx_dynamic_axes_leave_out_what_the_model_cannot_vary(tiny_config):
    """Batch dynamic unless an AW conv is grouped (MnasNet's depthwise); height and width only without AA / AW."""
    cases = {
        ("attention=none",): (0, 2, 3),
        ("attention=aa",): (0,),
        ("attention=aw",): (0,),
        ("attention=aw", "backbone=mnasnet_a1_050"): (),
    }
    for overrides, axes in cases.items():
        model = build_task(tiny_config(*overrides)).build_model()
        assert export_script.onnx_dynamic_axes(model) == axes, overrides


def test_onnx_export_without_onnxscript_stops_first_with_one_line(checkpoint, capsys, monkeypatch):
    _, _, path = checkpoint
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        export_script.main([str(path), "--onnx"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: --onnx needs the onnxscript package: pip install -e ".[onnx]"\n'
    assert not (path.parent / "export").exists()
