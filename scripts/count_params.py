"""Parameters and FLOPs of the papers' networks, ours beside the paper's.

    python scripts/count_params.py                                  # every paper row with a parameter count
    python scripts/count_params.py --grid --models resnet50 --variants none aa aw [--size 224] [--no-flops]

The paper rows are scripts/paper_table.py's: each built from its own experiment (`experiment=paper/<row>`) and
counted by aaconv.models.cost at the row's own input (224 px ImageNet, 32 px CIFAR, the RetinaNet rows' 640 x 640
canvas), with the same cache; this script prints the exact counts and the differences in percent.
FLOPs: torch.utils.flop_counter (one forward, batch 1, eval mode, on the meta device) on AA's reference
formulation, a multiply-add counted as 2 FLOPs, the paper's convention. Paper numbers: Bello, Zoph, Vaswani,
Shlens, Le, "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv 1904.09925).
"""

from __future__ import annotations

import argparse

import paper_table  # scripts/paper_table.py (this script's folder is on sys.path): the rows and their model sizes
import torch

from aaconv.layers import VARIANTS
from aaconv.models import MODELS, create_model
from aaconv.models.cost import count_flops, count_params
from aaconv.utils import cli


def _ratio(ours: float | None, paper: float | None) -> str:
    return "-" if ours is None or paper is None else f"{100 * (ours / paper - 1):+.2f}%"


def paper_rows(cache: bool) -> None:
    """Every paper row with a parameter count: ours (exact), the paper's, the differences."""
    sizes = paper_table.SizeCache(enabled=cache)
    print("| model | params | paper | diff | GFLOPs | paper | diff | input |")
    print("|---|---|---|---|---|---|---|---|")
    for row in paper_table.ROWS:
        if "params_m" not in row.paper:
            continue
        size = sizes.get(row)
        paper_gflops = row.paper.get("gflops")
        print(
            f"| {row.row} | {size['params']:,} | {row.paper['params_m']}M | "
            f"{_ratio(size['params'] / 1e6, row.paper['params_m'])} | {size['gflops']:.2f} | "
            f"{paper_gflops or '-'} | {_ratio(size['gflops'], paper_gflops)} | {size['flops_at']} |",
            flush=True,
        )
    sizes.save()


def grid(models: list[str], variants: list[str], size: int, flops: bool) -> None:
    print("| model | attention | params | GFLOPs |")
    print("|---|---|---|---|")
    for name in models:
        for variant in variants:
            with torch.device("meta"):
                model = create_model(name, variant, input_size=size)
            gflops = f"{count_flops(model, size, size) / 1e9:.2f}" if flops else "-"
            print(f"| {name} | {variant} | {count_params(model):,} | {gflops} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="every --models x --variants instead of the paper rows")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--size", type=cli.positive_int, default=224)
    parser.add_argument("--no-flops", action="store_true", help="--grid: parameters only")
    parser.add_argument("--no-cache", action="store_true", help="recount the paper rows instead of reading the cache")
    args = parser.parse_args()
    if args.grid:
        grid(args.models, args.variants, args.size, not args.no_flops)
    else:
        paper_rows(not args.no_cache)


if __name__ == "__main__":
    main()
