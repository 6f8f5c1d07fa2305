"""scripts/paper_plot.py (paper_table.py --plot): which points each table's panels draw, with our error bars."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from aaconv.errors import ConfigError
from helpers.config import REPO

pytest.importorskip("matplotlib")
SPEC = importlib.util.spec_from_file_location("paper_plot", REPO / "scripts" / "paper_plot.py")
paper_plot = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(paper_plot)


def row(table: str, name: str, experiment: str, paper: dict, ours: dict) -> dict:
    return {"table": table, "row": name, "experiment": experiment, "paper": paper, "ours": ours}


OBJECTS = [
    row(
        "A: ImageNet",
        "ResNet-50",
        "paper/imagenet_resnet50_none",
        {"params_m": 25.6, "gflops": 8.2, "top1": 76.4},
        {"params_m": 25.56, "gflops": 8.21, "top1": 75.0, "top1_std": 0.4},
    ),
    row(
        "A: ImageNet",
        "ResNet-101",
        "paper/imagenet_resnet101_none",
        {"params_m": 44.5, "gflops": 15.6, "top1": 77.9},
        {"params_m": 44.55, "top1": 77.0},
    ),
    row(
        "A: ImageNet",
        "AA-ResNet-50",
        "paper/imagenet_resnet50_aa",
        {"params_m": 25.8, "top1": 77.7},
        {"params_m": 25.9},
    ),
    row("B: COCO", "RetinaNet R50", "paper/coco_retinanet_resnet50_none", {"params_m": 33.4, "ap": 36.8}, {"runs": 0}),
    row("C: no numbers", "AW-ResNet-50", "paper/imagenet_resnet50_aw", {"note": "gains only"}, {"runs": 0}),
]


def lines_by_label(ax) -> dict[str, list[tuple[float, float]]]:
    """{legend label: the points of its line} of an axis drawn with errorbar."""
    return {c.get_label(): list(zip(*c.lines[0].get_data(), strict=True)) for c in ax.containers}


def test_each_table_with_numbers_gets_params_and_gflops_panels_of_paper_and_ours() -> None:
    fig = paper_plot.figure(OBJECTS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "A: ImageNet: top-1 against parameters (M)",
        "A: ImageNet: top-1 against GFLOPs",
        "B: COCO: AP against parameters (M)",
        "B: COCO: AP against GFLOPs",
    ]  # table C has no number to draw
    params, gflops, coco_params, coco_gflops = fig.axes
    assert lines_by_label(params) == {
        "ResNet-* (paper)": [(25.6, 76.4), (44.5, 77.9)],  # a family, joined in order of size
        "AA-ResNet-* (paper)": [(25.8, 77.7)],
        "ResNet-* (ours)": [(25.56, 75.0), (44.55, 77.0)],  # our AA row has no top-1 yet: no point
    }
    assert lines_by_label(gflops) == {
        "ResNet-* (paper)": [(8.2, 76.4), (15.6, 77.9)],
        "ResNet-* (ours)": [(8.21, 75.0)],
    }
    [ours] = [c for c in params.containers if c.get_label() == "ResNet-* (ours)"]
    [bars] = ours.lines[2]
    assert [tuple(s[:, 1]) for s in bars.get_segments()] == [(74.6, 75.4), (77.0, 77.0)]  # +- the seeds' std
    assert not any(c.has_yerr for c in params.containers if "paper" in c.get_label())
    assert lines_by_label(coco_params) == {"RetinaNet R* (paper)": [(33.4, 36.8)]}
    assert not coco_gflops.containers and coco_gflops.texts[0].get_text() == "no GFLOPs beside a AP number"


def test_nothing_to_draw_is_one_error_naming_the_fix() -> None:
    with pytest.raises(
        ConfigError, match="^--plot found no row with a metric beside its parameters or GFLOPs; leave out --no-count"
    ):
        paper_plot.figure(OBJECTS[-1:])


def test_without_matplotlib_it_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"^--plot needs matplotlib: .*\.\[plot\]"):
        paper_plot.figure(OBJECTS)
