"""Export a checkpoint's model weights as safetensors, beside the run's resolved config (and as ONNX).

    python scripts/export.py outputs/<run>/best.pt [--output DIR] [--weights auto|ema|model] [--onnx]

Writes DIR/model.safetensors (a state dict; no pickled code, readable without aaconv) and DIR/config.yaml (the
run's resolved config as checked on rebuilding, plain data, without the training-only `callbacks`). The weights
are those eval.py evaluates (`--weights auto`, the default): the EMA's when the checkpoint has them (trained with
trainer.ema.enabled), else the model's; `--weights ema|model` picks one (`--ema` is `--weights ema`), and the
file's metadata `weights` says which. DIR defaults to an `export` folder beside the checkpoint. The weights load anywhere a weights file is accepted: `backbone.weights=DIR/model.safetensors`,
`aaconv.models.pretrained.load_pretrained(model, ...)`, and timm's
`timm.create_model("aa_resnet50", checkpoint_path=...)` (aaconv.models.registry).

`--onnx` also writes DIR/model.onnx (needs the `onnx` extra: pip install -e ".[onnx]"): a classifier in eval
mode, input "images" (B, 3, H, W), output "logits" (B, num_classes), through torch's exporter
(`torch.onnx.export(..., dynamo=True)`), weights inside the file (under protobuf's 2 GiB limit; above it they go to
DIR/model.onnx.data, which must stay beside model.onnx). Which axes are dynamic (`onnx_dynamic_axes`):
- the batch B, except with an AW conv of groups > 1 (MnasNet's depthwise convs under AW): its per-sample kernels
  are one grouped conv over the batch, and ONNX's Conv takes its group count as a constant; B is then 1;
- the height and width, except in models with AA or AW layers, whose graphs hold the run's `data.image_size` S:
  AA's relative tables cover the feature maps of an S-px image (onnxruntime would clamp their slices silently
  beyond it), and AW pools each input to its kernel size, which torch's exporter does not translate for a symbolic
  size. Models without them (attention none / se / cbam) take any size.
AA and AW layers export the formulation with no Python loop over the batch (AA `reference`, AW `unfold`; the same
function as the one training ran). Detection checkpoints stop with a one-line "not supported" and the reason.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save
from torch import nn

from aaconv.engine.checkpoint import WEIGHTS
from aaconv.errors import ConfigError, RunDirError, exit_on_user_error
from aaconv.layers.aw import AWConv2d
from aaconv.layers.relative_attention import RelativeAttention2d
from aaconv.runs import Run, rebuild_run
from aaconv.tasks.classification import ClassificationTask
from aaconv.utils.atomic import atomic_write

DETECTION_ONNX = (
    "ONNX export of a detector is not supported: torchvision's RetinaNet / Faster R-CNN take a list of "
    "variable-size images and return per-image box lists from data-dependent post-processing (NMS), "
    "which torch's exporter does not trace into a static graph; export the backbone weights (model.safetensors)"
)
ONNX_MODULES = ("onnx", "onnxscript")  # what torch.onnx.export(..., dynamo=True) imports
PROTOBUF_LIMIT = 2**31  # bytes: a larger ONNX file keeps its weights in an external .data file


def export(checkpoint: str | Path, output: str | Path | None = None, weights: str = "auto") -> tuple[Path, Path]:
    """Writes `output`/model.safetensors (the `weights`: auto, ema or model) and `output`/config.yaml from
    `checkpoint`; returns their paths. The run is rebuilt first (aaconv.runs.rebuild_run), so a checkpoint whose
    config or weights do not make its model stops here, not in whoever loads the export."""
    return write_weights(rebuild_run(checkpoint, weights, option="--weights"), _folder(checkpoint, output))


def write_weights(run: Run, folder: Path) -> tuple[Path, Path]:
    """`folder`/model.safetensors (the rebuilt model's state dict) and `folder`/config.yaml of `run`."""
    state_dict = {key: tensor.contiguous() for key, tensor in run.model.state_dict().items()}
    metadata = {
        "format": "pt",
        "model": str(run.config.backbone.name),
        "attention": str(run.config.attention.variant),
        "weights": str(run.weights),
    }
    try:
        weights_path = atomic_write(folder / "model.safetensors", lambda f: f.write(save(state_dict, metadata)))
        config_path = atomic_write(folder / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(run.config).encode()))
    except OSError as e:
        raise RunDirError(f"cannot write the export into {folder} ({e}); pass --output with a writable folder") from e
    return weights_path, config_path


def _folder(checkpoint: str | Path, output: str | Path | None) -> Path:
    return Path(output) if output is not None else Path(checkpoint).expanduser().parent / "export"


def require_onnx() -> None:
    """ConfigError naming the first module torch's ONNX exporter needs that is not installed, and the extra."""
    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(f'--onnx needs the {name} package: pip install -e ".[onnx]"') from None


def onnx_dynamic_axes(model: nn.Module) -> tuple[int, ...]:
    """The input axes of `model`'s ONNX graph that take any size (the module docstring says why the others not)."""
    modules = list(model.modules())
    grouped_aw = any(isinstance(m, AWConv2d) and m.conv.groups > 1 for m in modules)
    fixed_size = any(isinstance(m, RelativeAttention2d | AWConv2d) for m in modules)
    return (*(() if grouped_aw else (0,)), *(() if fixed_size else (2, 3)))


def _loop_free(model: nn.Module) -> None:
    """Sets AA and AW layers to the formulation without a Python loop over the batch, which the exporter would
    unroll at the traced batch size (AW's `auto` runs `per_sample` on mid-size maps)."""
    for module in model.modules():
        if isinstance(module, RelativeAttention2d):
            module.impl = "reference"
        if isinstance(module, AWConv2d) and module.conv.groups == 1:
            module.impl = "unfold"


def export_onnx(checkpoint: str | Path, output: str | Path | None = None, weights: str = "auto") -> Path:
    """Writes `output`/model.onnx: the checkpoint's classifier in eval mode, traced at its config's image size,
    with the dynamic axes of `onnx_dynamic_axes`; returns its path."""
    return write_onnx(rebuild_run(checkpoint, weights, option="--weights"), _folder(checkpoint, output))


def write_onnx(run: Run, folder: Path) -> Path:
    """`folder`/model.onnx of `run`'s classifier (export_onnx); a detector is one ConfigError line."""
    if not isinstance(run.task, ClassificationTask):
        raise ConfigError(DETECTION_ONNX)
    model = run.model.eval()
    _loop_free(model)
    axes = onnx_dynamic_axes(model)
    names = {0: "batch", 2: "height", 3: "width"}
    size = run.config.data.image_size
    example = torch.zeros(2 if 0 in axes else 1, 3, size, size)  # a traced batch of 1 would be fixed at 1
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    path = folder / "model.onnx"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=["images"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=({axis: torch.export.Dim(names[axis]) for axis in axes},),
            external_data=weight_bytes >= PROTOBUF_LIMIT,
        )
    except OSError as e:
        raise RunDirError(f"cannot write {path} ({e}); pass --output with a writable folder") from e
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an aaconv checkpoint (last.pt / best.pt of a run directory)")
    parser.add_argument("--output", help="output folder (default: <checkpoint folder>/export)")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="auto (default): the EMA's when the checkpoint has them, else the model's; ema; model",
    )
    parser.add_argument("--ema", action="store_const", dest="weights", const="ema", help="the same as --weights ema")
    parser.add_argument(
        "--onnx", action="store_true", help='also write model.onnx (classifiers; pip install -e ".[onnx]")'
    )
    args = parser.parse_args(argv)
    if args.onnx:
        require_onnx()
    run = rebuild_run(args.checkpoint, args.weights, option="--weights")  # once for both files
    folder = _folder(args.checkpoint, args.output)
    paths = list(write_weights(run, folder))
    if args.onnx:
        paths.append(write_onnx(run, folder))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
