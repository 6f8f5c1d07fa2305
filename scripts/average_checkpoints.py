"""Average the weights of several checkpoints into one (a run's best or last epochs, as timm's avg_checkpoints.py).

    python scripts/average_checkpoints.py outputs/r50 --best 5 --output outputs/r50/averaged.pt
    python scripts/average_checkpoints.py outputs/r50 --last 3 --output averaged.pt
    python scripts/average_checkpoints.py a.pt b.pt c.pt --output averaged.pt

Inputs are checkpoint files and run directories; a run directory stands for the checkpoints train.py kept in it
with trainer.keep_best=k (best-<epoch>.pt, ranked best first in its last.pt). `--best k` takes the k best of each
run directory (run directories only: a file carries no ranking); `--last k` the k newest inputs (by optimizer
step). Files are read with weights_only=True and must hold the same model (keys and shapes).

Floating-point tensors are averaged (in float64, then cast back), BatchNorm running means and variances
included; integer buffers (BatchNorm's num_batches_tracked) are the newest input's. The EMA weights are
averaged too when every input has them. The output, written atomically, holds `model` (and `ema`), the newest
input's `config`, `epoch` and `global_step`, and `averaged_from` (the inputs, oldest first): eval.py
checkpoint=..., scripts/export.py and backbone.weights=... take it; it has no optimizer state, so it starts
no resume.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aaconv.engine.checkpoint import load_checkpoint, save_checkpoint
from aaconv.errors import CheckpointError, ConfigError, exit_on_user_error

KEPT = ("model", "ema", "config", "epoch", "global_step")  # what is read of each input (no optimizer state)


def kept_checkpoints(run_dir: Path, best: int | None) -> list[Path]:
    """The best-<epoch>.pt files of `run_dir` that its last.pt ranks (trainer.keep_best), best first: the
    `best` first of them, or all."""
    entries = load_checkpoint(run_dir / "last.pt").get("best_checkpoints", [])
    files = [run_dir / e["file"] for e in entries if (run_dir / e["file"]).is_file()]
    if not files:
        raise CheckpointError(
            f"run directory {run_dir} holds no kept checkpoints (best-<epoch>.pt); train with trainer.keep_best=k, "
            "or pass checkpoint files"
        )
    if best is not None and len(files) < best:
        raise CheckpointError(f"--best {best}: run directory {run_dir} keeps {len(files)} checkpoints")
    return files[:best]


def input_files(inputs: Sequence[Path], best: int | None) -> list[Path]:
    """The checkpoint files `inputs` stand for (see the module docstring)."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += kept_checkpoints(path, best)
        elif best is not None:
            raise ConfigError(
                f"--best ranks the checkpoints of a run directory; {path} is a file: pass run directories"
            )
        else:
            files.append(path)
    return files


def check_same_model(named: Sequence[tuple[Path, Mapping[str, Tensor]]]) -> None:
    """CheckpointError (one line) when a state dict's keys or shapes differ from the first's."""
    first_path, first = named[0]
    for path, state_dict in named[1:]:
        differ = sorted(set(first) ^ set(state_dict))
        if differ:
            raise CheckpointError(
                f"{path} holds another model than {first_path}: {len(differ)} keys are in one only (e.g. {differ[0]})"
            )
        for key, value in first.items():
            if state_dict[key].shape != value.shape:
                raise CheckpointError(
                    f"{path} holds another model than {first_path}: {key} is {tuple(state_dict[key].shape)} there "
                    f"but {tuple(value.shape)} in {first_path.name}"
                )


def average_state_dicts(state_dicts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of each floating-point tensor over `state_dicts` (same keys and shapes, oldest first), in its
    dtype; every other tensor (integer buffers) as the last, newest, has it."""
    newest = state_dicts[-1]
    averaged = {}
    for key, value in newest.items():
        if value.is_floating_point():
            total = torch.stack([sd[key].to(torch.float64) for sd in state_dicts]).sum(0)
            averaged[key] = (total / len(state_dicts)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def average_checkpoints(files: Sequence[Path], last: int | None = None) -> dict[str, Any]:
    """The averaged checkpoint of `files` (the `last` newest of them, or all); see the module docstring."""
    states = [(path, {k: v for k, v in load_checkpoint(path).items() if k in KEPT}) for path in files]
    states.sort(key=lambda item: item[1].get("global_step", 0))  # stable: oldest first, ties in the given order
    if last is not None:
        if len(states) < last:
            raise CheckpointError(f"--last {last}: only {len(states)} checkpoints given")
        states = states[-last:]
    check_same_model([(path, state["model"]) for path, state in states])
    newest = states[-1][1]
    averaged: dict[str, Any] = {
        "model": average_state_dicts([state["model"] for _, state in states]),
        **{key: newest[key] for key in ("config", "epoch", "global_step") if key in newest},
        "averaged_from": [str(path) for path, _ in states],
    }
    without_ema = [path for path, state in states if "ema" not in state]
    if not without_ema:
        check_same_model([(path, state["ema"]) for path, state in states])
        averaged["ema"] = average_state_dicts([state["ema"] for _, state in states])
    elif len(without_ema) < len(states):
        print(f"note: EMA weights left out of the average: {without_ema[0]} has none", file=sys.stderr)
    return averaged


def positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="checkpoint files and run directories (keep_best's)")
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument("--best", type=positive, help="the k best checkpoints of each run directory")
    choose.add_argument("--last", type=positive, help="the k newest checkpoints (by optimizer step)")
    parser.add_argument("--output", type=Path, required=True, help="the averaged checkpoint to write")
    args = parser.parse_args(argv)
    averaged = average_checkpoints(input_files(args.inputs, args.best), args.last)
    print(save_checkpoint(averaged, args.output))


if __name__ == "__main__":
    main()
