"""Export a checkpoint's model weights as safetensors, beside the run's resolved config (and as ONNX).

    python scripts/export.py outputs/<run>/best.pt [--output DIR] [--ema] [--onnx]

Writes DIR/model.safetensors (the model's state dict; no pickled code, readable without aaconv) and
DIR/config.yaml (the run's resolved config, plain data). DIR defaults to an `export` folder beside the
checkpoint. The weights load anywhere a weights file is accepted: `backbone.weights=DIR/model.safetensors`,
`aaconv.models.pretrained.load_pretrained(model, ...)`, and timm's
`timm.create_model("aa_resnet50", checkpoint_path=...)` (aaconv.models.registry).

`--onnx` also writes DIR/model.onnx: a classifier in eval mode, input "images" (1, 3, S, S) at the run's
`data.image_size` S, output "logits" (1, num_classes), through torch's exporter (`torch.onnx.export(...,
dynamo=True)`). Detection checkpoints stop with a one-line "not supported" and the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.errors import CheckpointError, ConfigError, RunDirError, exit_on_user_error
from aaconv.models.pretrained import load_pretrained
from aaconv.tasks import task_from_saved_config
from aaconv.tasks.classification import ClassificationTask
from aaconv.utils.atomic import atomic_write

DETECTION_ONNX = (
    "ONNX export of a detector is not supported: torchvision's RetinaNet / Faster R-CNN take a list of "
    "variable-size images and return per-image box lists from data-dependent post-processing (NMS), "
    "which torch's exporter does not trace into a static graph; export the backbone weights (model.safetensors)"
)


def _weights(state: dict, checkpoint: str | Path, ema: bool) -> dict[str, torch.Tensor]:
    if ema and "ema" not in state:
        raise CheckpointError(
            f"{checkpoint} has no EMA weights (trained with trainer.ema.enabled=false); export without --ema"
        )
    return {key: tensor.contiguous() for key, tensor in state["ema" if ema else "model"].items()}


def export(checkpoint: str | Path, output: str | Path | None = None, ema: bool = False) -> tuple[Path, Path]:
    """Writes `output`/model.safetensors and `output`/config.yaml from `checkpoint`; returns their paths."""
    state = load_checkpoint(checkpoint)
    weights = _weights(state, checkpoint, ema)
    config = state.get("config") or {}
    metadata = {
        "format": "pt",
        "model": str(config.get("backbone", {}).get("name", "")),
        "attention": str(config.get("attention", {}).get("variant", "")),
        "ema": str(ema).lower(),
    }
    folder = _folder(checkpoint, output)
    try:
        weights_path = atomic_write(folder / "model.safetensors", lambda f: f.write(save(weights, metadata)))
        config_path = atomic_write(folder / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(config).encode()))
    except OSError as e:
        raise RunDirError(f"cannot write the export into {folder} ({e}); pass --output with a writable folder") from e
    return weights_path, config_path


def _folder(checkpoint: str | Path, output: str | Path | None) -> Path:
    return Path(output) if output is not None else Path(checkpoint).expanduser().parent / "export"


def export_onnx(checkpoint: str | Path, output: str | Path | None = None, ema: bool = False) -> Path:
    """Writes `output`/model.onnx: the checkpoint's classifier in eval mode at its config's image size."""
    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    if "task" not in config:
        raise CheckpointError(f"{checkpoint} stores no run config, so its model cannot be rebuilt for ONNX")
    task = task_from_saved_config({**config, "backbone": {**config["backbone"], "weights": None}})
    if not isinstance(task, ClassificationTask):
        raise ConfigError(DETECTION_ONNX)
    model = task.build_model().eval()
    load_pretrained(model, _weights(state, checkpoint, ema), strict=True)
    size = config["data"]["image_size"]
    path = _folder(checkpoint, output) / "model.onnx"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(
            model, (torch.zeros(1, 3, size, size),), path, input_names=["images"], output_names=["logits"], dynamo=True
        )
    except OSError as e:
        raise RunDirError(f"cannot write {path} ({e}); pass --output with a writable folder") from e
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an aaconv checkpoint (last.pt / best.pt of a run directory)")
    parser.add_argument("--output", help="output folder (default: <checkpoint folder>/export)")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the model's")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (classifiers)")
    args = parser.parse_args(argv)
    paths = list(export(args.checkpoint, args.output, args.ema))
    if args.onnx:
        paths.append(export_onnx(args.checkpoint, args.output, args.ema))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
