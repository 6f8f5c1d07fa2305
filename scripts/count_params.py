"""Parameters and FLOPs of the AA paper's networks, ours beside the paper's.

    python scripts/count_params.py                                  # every paper row with a parameter count
    python scripts/count_params.py --grid --models resnet50 --variants none aa aw [--size 224] [--no-flops]

Paper numbers: Bello, Zoph, Vaswani, Shlens, Le, "Attention Augmented Convolutional Networks", ICCV 2019
(arXiv 1904.09925), the ImageNet ResNet table, the MnasNet-A1 table and the COCO RetinaNet table.
FLOPs come from torch.utils.flop_counter.FlopCounterMode (one forward, batch 1, eval mode, on the meta device)
on AA's reference formulation; it counts a multiply-add as 2 FLOPs, the paper's convention. The RetinaNet rows
count parameters only: the paper does not say at which input size or over which parts its detector FLOPs are
counted. Every model is built on the meta device, so the whole table takes seconds.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from aaconv.layers import VARIANTS, AAConv2d
from aaconv.models import MODELS, create_detector, create_model
from aaconv.utils import cli


class PaperRow(NamedTuple):
    label: str
    model: str  # a classifier name, or "retinanet/<backbone>"
    attention: str | dict[str, Any]
    params_m: float
    gflops: float | None
    kwargs: dict[str, Any] = {}


# AA paper, table of ImageNet ResNets (224 px, 1000 classes), MnasNet-A1 table, COCO RetinaNet table (91 classes in
# torchvision's convention). The paper's RetinaNet baselines are 2% smaller than torchvision's (and TF's) RetinaNet;
# see docs/models.md. The last two rows use the AA setting that reproduces the paper's RetinaNet parameter drops.
_DETECTION_AA = {"variant": "aa", "aa": {"min_dk_per_head": 0}}
PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("ResNet-34", "resnet34", "none", 21.8, 7.4),
    PaperRow("AA-ResNet-34", "resnet34", "aa", 20.7, 7.1),
    PaperRow("ResNet-50", "resnet50", "none", 25.6, 8.2),
    PaperRow("SE-ResNet-50", "resnet50", "se", 28.1, 8.2),
    PaperRow("AA-ResNet-50", "resnet50", "aa", 25.8, 8.3),
    PaperRow("ResNet-101", "resnet101", "none", 44.5, 15.6),
    PaperRow("AA-ResNet-101", "resnet101", "aa", 45.4, 16.1),
    PaperRow("ResNet-152", "resnet152", "none", 60.2, 23.0),
    PaperRow("AA-ResNet-152", "resnet152", "aa", 61.6, 23.8),
    *(
        PaperRow(f"{prefix}MnasNet-A1 {width}", "mnasnet_a1", variant, params, None, {"width_mult": width})
        for width, base, augmented in ((0.75, 2.91, 3.02), (1.0, 3.89, 4.06), (1.25, 5.26, 5.53), (1.4, 6.10, 6.44))
        for prefix, variant, params in (("", "none", base), ("AA-", "aa", augmented))
    ),
    PaperRow("RetinaNet R50", "retinanet/resnet50", "none", 33.4, None),
    PaperRow("RetinaNet SE-R50", "retinanet/resnet50", "se", 35.9, None),
    PaperRow("RetinaNet AA-R50", "retinanet/resnet50", "aa", 33.1, None),
    PaperRow("RetinaNet R101", "retinanet/resnet101", "none", 52.4, None),
    PaperRow("RetinaNet AA-R101", "retinanet/resnet101", "aa", 51.7, None),
    PaperRow(
        "RetinaNet AA-R50, paper-count setting",
        "retinanet/resnet50",
        _DETECTION_AA,
        33.1,
        None,
        {"attention_stages": [3, 4]},
    ),
    PaperRow(
        "RetinaNet AA-R101, paper-count setting",
        "retinanet/resnet101",
        _DETECTION_AA,
        51.7,
        None,
        {"attention_stages": [3, 4]},
    ),
)


def build(model: str, attention: str | dict[str, Any], size: int = 224, **kwargs: Any) -> torch.nn.Module:
    """A classifier, or "retinanet/<backbone>" (trainable BN, torchvision's 800 / 1333 resize), on the meta device."""
    with torch.device("meta"):
        if model.startswith("retinanet/"):
            backbone = {"name": model.split("/", 1)[1], **kwargs}
            return create_detector("retinanet", backbone, attention, frozen_bn=False)
        return create_model(model, attention, input_size=size, **kwargs)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, size: int = 224) -> int:
    """FLOPs (2 per multiply-add) of one (1, 3, size, size) forward, on AA's reference formulation (the paper's
    FLOPs; the fused path computes the same logits through an augmented head dim dk_h + H + W and would count more)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, AAConv2d):
            module.impl = "reference"
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops()


def _ratio(ours: float | None, paper: float | None) -> str:
    return "-" if ours is None or paper is None else f"{100 * (ours / paper - 1):+.2f}%"


def paper_table(flops: bool) -> None:
    print("| model | params | paper | diff | GFLOPs | paper | diff |")
    print("|---|---|---|---|---|---|---|")
    for row in PAPER_ROWS:
        model = build(row.model, row.attention, **row.kwargs)
        params = count_params(model)
        gflops = count_flops(model) / 1e9 if flops and row.gflops is not None else None
        print(
            f"| {row.label} | {params:,} | {row.params_m}M | {_ratio(params / 1e6, row.params_m)} | "
            f"{'-' if gflops is None else f'{gflops:.2f}'} | {row.gflops or '-'} | {_ratio(gflops, row.gflops)} |",
            flush=True,
        )


def grid(models: list[str], variants: list[str], size: int, flops: bool) -> None:
    print("| model | attention | params | GFLOPs |")
    print("|---|---|---|---|")
    for name in models:
        for variant in variants:
            model = build(name, variant, size)
            gflops = f"{count_flops(model, size) / 1e9:.2f}" if flops else "-"
            print(f"| {name} | {variant} | {count_params(model):,} | {gflops} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="every --models x --variants instead of the paper rows")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--size", type=cli.positive_int, default=224)
    parser.add_argument("--no-flops", action="store_true")
    args = parser.parse_args()
    if args.grid:
        grid(args.models, args.variants, args.size, not args.no_flops)
    else:
        paper_table(not args.no_flops)


if __name__ == "__main__":
    main()
