"""Parameters and FLOPs of every backbone x attention variant (and both detectors), beside the papers'.

    python scripts/count_params.py [--models resnet50 mnasnet_a1] [--variants none aa] [--size 224] [--no-flops]

FLOPs come from torch.utils.flop_counter.FlopCounterMode (one forward, batch 1, eval mode), which counts
a multiply-add as 2 FLOPs, the AA paper's convention ("GFLOPs (2x)"); "GMACs" is half of it.
Paper numbers: /work/shared/papers.md (AA paper Table 2 / 3 / MnasNet table; [?] rows are leads only).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from aaconv.layers import VARIANTS, AAConv2d
from aaconv.models import MODELS, create_detector, create_model

# (model, variant) -> (params in M, GFLOPs in the 2x convention) from papers.md.
PAPER = {
    ("resnet34", "none"): (21.8, 7.4), ("resnet34", "aa"): (20.7, 7.1),
    ("resnet50", "none"): (25.6, 8.2), ("resnet50", "se"): (28.1, 8.2), ("resnet50", "aa"): (25.8, 8.3),
    ("resnet101", "none"): (44.5, 15.6), ("resnet101", "aa"): (45.4, 16.1),
    ("resnet152", "none"): (60.2, 23.0), ("resnet152", "aa"): (61.6, 23.8),
    ("mnasnet_a1", "none"): (3.89, None), ("mnasnet_a1", "aa"): (4.06, None),
    ("retinanet/resnet50", "none"): (33.4, 182), ("retinanet/resnet50", "se"): (35.9, 183),
    ("retinanet/resnet50", "aa"): (33.1, 182), ("retinanet/resnet101", "none"): (52.4, 243),
    ("retinanet/resnet101", "aa"): (51.7, 245),
}


def flops(model: torch.nn.Module, inputs: object) -> int:
    """Counted on AA's reference formulation (the paper's FLOPs); the fused path computes the same
    logits through an augmented head dim (dk_h + H + W) and would count more."""
    model.eval()
    for module in model.modules():
        if isinstance(module, AAConv2d):
            module.impl = "reference"
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops()


def row(name: str, variant: str, model: torch.nn.Module, inputs: object | None) -> str:
    params = sum(p.numel() for p in model.parameters())
    gflops = flops(model, inputs) / 1e9 if inputs is not None else None
    paper_params, paper_flops = PAPER.get((name, variant), (None, None))

    def fmt(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return (f"| {name} | {variant} | {params:,} | {fmt(paper_params, 2)} | {fmt(gflops and gflops / 2, 2)} | "
            f"{fmt(gflops, 2)} | {fmt(paper_flops, 1)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--detector-size", type=int, default=1024, help="square detector input (paper: 1024)")
    parser.add_argument("--no-flops", action="store_true")
    parser.add_argument("--detectors", action="store_true", help="also RetinaNet / Faster R-CNN over ResNet-50/101")
    args = parser.parse_args()
    print(f"| model | attention | params | paper params (M) | GMACs | GFLOPs (2x) | paper GFLOPs |")
    print("|---|---|---|---|---|---|---|")
    image = None if args.no_flops else torch.randn(1, 3, args.size, args.size)
    for name in args.models:
        for variant in args.variants:
            print(row(name, variant, create_model(name, variant, input_size=args.size), image), flush=True)
    if args.detectors:
        det_image = None if args.no_flops else [torch.rand(3, args.detector_size, args.detector_size)]
        for head in ("retinanet", "faster_rcnn"):
            for backbone in ("resnet50", "resnet101"):
                for variant in ("none", "se", "aa"):
                    model = create_detector(head, backbone, variant, min_size=args.detector_size,
                                            max_size=args.detector_size, frozen_bn=False)
                    print(row(f"{head}/{backbone}", variant, model, det_image), flush=True)


if __name__ == "__main__":
    main()
