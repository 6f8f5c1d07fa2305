"""Top-1 / top-5 of one classification checkpoint at several test resolutions.

    python scripts/fixres_table.py RUN/last.pt --sizes 160 224 288 320 [--crop-pct 0.875] [--device auto] [--out DIR]

A model trained with random-resized crops sees objects larger than the usual centre crop shows them at the same
size, and often scores best tested at a larger size (Touvron, Vedaldi, Douze, Jegou, "Fixing the train-test
resolution discrepancy", NeurIPS 2019, arXiv 1906.06423). Each size is evaluated by eval.py's own `evaluate` on
configs/eval.yaml composed with `eval_image_size=<size>` (and `crop_pct`; default the run's): the same run rebuilt
from the checkpoint, the same numbers `python eval.py checkpoint=... eval_image_size=<size>` prints. AA's relative
tables read larger maps with clipped offsets (docs/layers.md). Each size's results.json goes to DIR/<size>px/
(default DIR: fixres/ beside the checkpoint); the table is printed, the training size marked with `*`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.config_checks import EVAL_CHECKS, check_config
from aaconv.engine.runtime import select_device
from aaconv.errors import exit_on_user_error
from aaconv.runs import compose_config, evaluate
from aaconv.utils.cli import positive_int


def fraction(text: str) -> float:
    """A number in (0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def eval_config(checkpoint: Path, size: int, crop_pct: float | None, device: str) -> DictConfig:
    """configs/eval.yaml as `python eval.py checkpoint=... eval_image_size=<size> [crop_pct=...]` composes it."""
    overrides = [f"checkpoint='{checkpoint}'", f"eval_image_size={size}", f"device={device}"]
    if crop_pct is not None:
        overrides.append(f"crop_pct={crop_pct}")
    return compose_config(overrides, config_name="eval")


def fixres_rows(
    checkpoint: Path, sizes: Sequence[int], crop_pct: float | None, device: str, out: Path
) -> list[dict[str, Any]]:
    """One row per size: {"size", "train" (the checkpoint's training size), "top1", "top5"}, each evaluated by
    eval.py's `evaluate` with its results.json in `out`/<size>px/."""
    state = load_checkpoint(checkpoint)
    rows = []
    for size in sizes:
        cfg = eval_config(checkpoint, size, crop_pct, device)
        check_config(cfg, EVAL_CHECKS)
        results = evaluate(cfg, state, select_device(cfg.device, key="device"), out / f"{size}px")
        train_size = state["config"]["data"]["image_size"]  # read after evaluate checked the stored config
        rows.append({"size": size, "train": size == train_size, "top1": results["top1"], "top5": results["top5"]})
    return rows


def format_table(rows: Sequence[dict[str, Any]], crop_pct: float | None) -> str:
    """The rows as a text table; `*` marks the training size."""
    crop = "the run's" if crop_pct is None else crop_pct
    lines = [f"crop_pct: {crop}"]
    lines.append(f"{'size':>5}  {'top-1':>6}  {'top-5':>6}")
    for row in rows:
        mark = "*" if row["train"] else " "
        lines.append(f"{row['size']:>5}{mark} {row['top1']:6.2f}  {row['top5']:6.2f}")
    lines.append("* the training size")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a classification run's last.pt or best.pt")
    parser.add_argument("--sizes", type=positive_int, nargs="+", required=True, help="test sides in pixels")
    parser.add_argument(
        "--crop-pct", type=fraction, help="resize to size / crop_pct, then centre-crop (default: the run's)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<index> (eval.py's device)")
    parser.add_argument("--out", type=Path, help="folder for each size's results.json (default: fixres/ beside it)")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out or args.checkpoint.parent / "fixres"
    rows = fixres_rows(args.checkpoint, args.sizes, args.crop_pct, args.device, out)
    print(format_table(rows, args.crop_pct))


if __name__ == "__main__":
    main()
