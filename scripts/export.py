"""Export a checkpoint's model weights as safetensors, beside the run's resolved config.

    python scripts/export.py outputs/<run>/best.pt [--output DIR] [--ema]

Writes DIR/model.safetensors (the model's state dict; no pickled code, readable without aaconv) and
DIR/config.yaml (the run's resolved config, plain data). DIR defaults to an `export` folder beside the
checkpoint. The weights load anywhere a weights file is accepted: `backbone.weights=DIR/model.safetensors`,
`aaconv.models.pretrained.load_pretrained(model, ...)`, and timm's
`timm.create_model("aa_resnet50", checkpoint_path=...)` (aaconv.models.registry).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import save

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.errors import CheckpointError, RunDirError, exit_on_user_error
from aaconv.utils.atomic import atomic_write


def export(checkpoint: str | Path, output: str | Path | None = None, ema: bool = False) -> tuple[Path, Path]:
    """Writes `output`/model.safetensors and `output`/config.yaml from `checkpoint`; returns their paths."""
    state = load_checkpoint(checkpoint)
    if ema and "ema" not in state:
        raise CheckpointError(
            f"{checkpoint} has no EMA weights (trained with trainer.ema.enabled=false); export without --ema"
        )
    weights = {key: tensor.contiguous() for key, tensor in state["ema" if ema else "model"].items()}
    config = state.get("config") or {}
    metadata = {
        "format": "pt",
        "model": str(config.get("backbone", {}).get("name", "")),
        "attention": str(config.get("attention", {}).get("variant", "")),
        "ema": str(ema).lower(),
    }
    folder = Path(output) if output is not None else Path(checkpoint).expanduser().parent / "export"
    try:
        weights_path = atomic_write(folder / "model.safetensors", lambda f: f.write(save(weights, metadata)))
        config_path = atomic_write(folder / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(config).encode()))
    except OSError as e:
        raise RunDirError(f"cannot write the export into {folder} ({e}); pass --output with a writable folder") from e
    return weights_path, config_path


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an aaconv checkpoint (last.pt / best.pt of a run directory)")
    parser.add_argument("--output", help="output folder (default: <checkpoint folder>/export)")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the model's")
    args = parser.parse_args(argv)
    for path in export(args.checkpoint, args.output, args.ema):
        print(path)


if __name__ == "__main__":
    main()
