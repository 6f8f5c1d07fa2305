"""paper_table.py --plot: ours against the papers for every table, the metric against parameters and GFLOPs.

One row of two panels per table that has a point to draw (a paper or our number with parameters or GFLOPs beside
it), as the papers' figures draw their tables (the AA paper's Figure 1: top-1 against parameters). Rows of one
family (the row name with its sizes left out: "AA-ResNet-34" ... "AA-ResNet-152") are joined by a line, the
paper's solid with circles, ours dashed with crosses and, where several runs (seeds) exist, their sample standard
deviation as error bars. Detection tables plot AP, classification tables top-1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aaconv.errors import ConfigError

AXES = (("params_m", "parameters (M)"), ("gflops", "GFLOPs"))


def family(row: str) -> str:
    """A row name with its numbers (depth, width multiplier) replaced by ``*``: "AA-ResNet-50" -> "AA-ResNet-*"."""
    return re.sub(r"\d+(\.\d+)?", "*", row)


def metric_of(experiment: str) -> str:
    return "ap" if experiment.startswith("paper/coco") else "top1"


def points(objects: Sequence[dict[str, Any]], source: str, x_key: str) -> dict[str, list[tuple[float, float, float]]]:
    """{family label: [(x, metric, std)]} of the ``source`` ("paper" / "ours") numbers that have ``x_key``."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for o in objects:
        numbers, metric = o[source], metric_of(o["experiment"])
        if isinstance(numbers.get(x_key), int | float) and isinstance(numbers.get(metric), int | float):
            out.setdefault(family(o["row"]), []).append(
                (float(numbers[x_key]), float(numbers[metric]), float(numbers.get(f"{metric}_std", 0.0)))
            )
    return {label: sorted(values) for label, values in out.items()}


def plot(objects: Sequence[dict[str, Any]], path: Path) -> None:
    """Writes ``figure(objects)`` to ``path``."""
    figure(objects).savefig(path, dpi=100)


def figure(objects: Sequence[dict[str, Any]]) -> Any:
    """The matplotlib figure of ``objects`` (paper_table.table_rows); ConfigError without matplotlib or without
    any point to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')") from None
    tables = []
    for table in dict.fromkeys(o["table"] for o in objects):
        rows = [o for o in objects if o["table"] == table]
        if any(points(rows, source, x_key) for source in ("paper", "ours") for x_key, _ in AXES):
            tables.append((table, rows))
    if not tables:
        raise ConfigError(
            "--plot found no row with a metric beside its parameters or GFLOPs; leave out --no-count, or choose "
            "tables with paper numbers (--table ImageNet)"
        )
    fig, axes = plt.subplots(len(tables), 2, figsize=(11, 3.6 * len(tables)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (table, rows), panel_row in zip(tables, axes, strict=True):
        metric = metric_of(rows[0]["experiment"])
        metric_name = "AP" if metric == "ap" else "top-1"
        labels = list(dict.fromkeys(family(o["row"]) for o in rows))
        for ax, (x_key, x_title) in zip(panel_row, AXES, strict=True):
            for source, style in (("paper", dict(fmt="o-")), ("ours", dict(fmt="x--", capsize=3))):
                for label, values in points(rows, source, x_key).items():
                    xs, ys, stds = zip(*values, strict=True)
                    colour = colours[labels.index(label) % len(colours)]
                    errors = stds if source == "ours" and any(stds) else None
                    ax.errorbar(xs, ys, yerr=errors, color=colour, label=f"{label} ({source})", **style)
            ax.set_title(f"{table}: {metric_name} against {x_title}", fontsize=9)
            ax.set_xlabel(x_title)
            ax.set_ylabel(f"{metric_name} (%)")
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, f"no {x_title} beside a {metric_name} number", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    plt.close(fig)  # out of pyplot's registry; the figure itself stays drawable
    return fig
