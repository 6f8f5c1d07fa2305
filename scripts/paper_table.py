"""The papers' tables with ours beside them: every row, its command, our model's size and our runs' metrics.

    python scripts/paper_table.py                          every row, the paper's numbers and the command to run it
    python scripts/paper_table.py outputs/ multirun/      + our metrics from the runs found there, and the difference
    python scripts/paper_table.py RUNS --format json       one object per row: {table, row, experiment, paper, ours}
    python scripts/paper_table.py RUNS --plot tables.png   ours vs the paper per table: top-1 / AP against params, GFLOPs
    python scripts/paper_table.py RUNS --include-short     runs cut short (trainer.max_steps, ...) counted, marked
    python scripts/paper_table.py --sweep multirun/DATE/TIME   the jobs of one sweep sorted by their primary metric

A run is any folder holding results.json (single runs and the job folders of a multirun) whose Hydra record
(.hydra/hydra.yaml) names the row's experiment and the row's backbone / attention choices; several runs of a row
(e.g. seeds) give mean and sample standard deviation. A run's metrics are those of the weights it reports: the
EMA's for runs trained with trainer.ema.enabled (the MnasNet rows), also from a results.json written before
its `weights` key (then its ema_top1, ...); ours in --format json lists them as `weights`. Runs cut short (results.json: `stopped_by` other than
"epochs", i.e. trainer.max_steps; or `eval_partial`, i.e. trainer.max_eval_batches) are left out of ours and
counted in one line on stderr; --include-short counts them, and each row says how many it holds. Our
parameters and FLOPs come from building the row's model on the meta device (no memory, no compute) and counting
one forward with torch.utils.flop_counter, which counts a multiply-add as 2 FLOPs as the paper does; AA is counted
in its reference formulation. Classification rows are counted at their training size (224 px ImageNet, 32 px
CIFAR); detection rows count backbone + FPN + heads
(RetinaNet: both heads; Faster R-CNN: the RPN head, the RoI head depends on the proposals) at the row's own input:
its canvas (the AA paper's RetinaNet rows: 640 x 640), else 800 x 1344 (torchvision's resize, padded). Parameters
include the frozen BatchNorm affines of the detection backbones (aaconv.models.cost, shared with count_params.py).
The counts are cached in $AACONV_CACHE/paper_table/ (default ~/.cache/aaconv), keyed by a digest of configs/ and
aaconv/: about 20 s of one core for all rows the first time, nothing after (--no-cache recounts).
Paper numbers: the AA paper (Bello et al. 2019), the AW paper's abstract (Zhu et al. 2021); each row names where
its numbers come from: "paper" (its tables, copied second-hand [2nd] or recalled and confirmed by the counts [?]).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from aaconv.errors import DataError, exit_on_user_error
from aaconv.runs import CONFIG_DIR as CONFIGS
from aaconv.runs import compose_config

REPO = CONFIGS.parent
PLACEHOLDERS = {"backbone.weights": "<ImageNet run>/last.pt"}  # what a row's required value is, in its command
DATA_ROOTS = {
    "imagenet": "data.root=/path/to/imagenet",
    "coco": "data.root=/path/to/coco",
    "cifar100": "data.root=/path/holding/cifar-100-python",
}
DETECTION_INPUT = (800, 1344)  # COCO's shorter side 800, the longer side padded to a multiple of 32


@dataclass(frozen=True)
class Row:
    table: str
    row: str
    experiment: str
    paper: dict[str, Any]
    choices: dict[str, str] = field(default_factory=dict)  # group choices a run must have besides the experiment's

    def command(self) -> str:
        """The command that trains this row (8 GPUs for ImageNet / COCO, one process otherwise)."""
        dataset = self.experiment.removeprefix("paper/").split("_")[0]
        launcher = "torchrun --nproc_per_node=8 " if dataset in ("imagenet", "coco") else "python "
        words = [f"{launcher}train.py experiment={self.experiment}", DATA_ROOTS.get(dataset, "")]
        words += [f"{key}={PLACEHOLDERS.get(key, '<value>')}" for key in required_values(self.experiment)]
        words += [f"{g}={o}" for g, o in self.choices.items()]
        return " ".join(w for w in words if w)


def _p(source: str, params_m: float | None = None, gflops: float | None = None, **metrics: Any) -> dict[str, Any]:
    """The paper's numbers of a row and where they come from (`source`, shown beside them)."""
    numbers = {k: v for k, v in {"params_m": params_m, "gflops": gflops, **metrics}.items() if v is not None}
    return {**numbers, "source": source}


AA_IN = "AA: ImageNet ResNet"  # AA paper Table 2; SE rows' top-1 from its Figure 1
AW_IN = "AW: ImageNet ResNet"  # AW paper abstract: gains only, no absolute numbers
MNAS = "AA: MnasNet"
POS = "AA: position encoding"
CIFAR = "AA: CIFAR-100"
RETINA = "AA: COCO RetinaNet"
FRCNN = "AW: COCO Faster R-CNN"
MINI = "Mini: built-in relations (CPU)"
AW_ON_TOP = "up to +0.57 top-1 over the activation-attention model"
# Where each paper number comes from: the paper's table or figure, as the project's paper notes grade the copy.
TABLE2 = "paper: ImageNet table [2nd]"
TABLE2_RECALLED = "paper: ImageNet table [?]; top-1 as in Fig. 1"
FIG1 = "paper: Fig. 1 (top-1 only)"
MNAS_TABLE = "paper: MnasNet table [?]; baselines = MnasNet-A1's own table"
POS_TABLE = "paper: position-encoding table [2nd]"
CIFAR_TABLE = "paper: CIFAR-100 table [2nd]"
RETINA_TABLE = "paper: COCO RetinaNet table [2nd]"
AW_ABSTRACT = "paper: AW abstract (gains only)"
ROWS: list[Row] = [
    Row(AA_IN, "ResNet-34", "paper/imagenet_resnet34_none", _p(TABLE2, 21.8, 7.4, top1=73.6, top5=91.5)),
    Row(AA_IN, "SE-ResNet-34", "paper/imagenet_resnet34_se", _p(FIG1, top1=74.3)),
    Row(AA_IN, "AA-ResNet-34", "paper/imagenet_resnet34_aa", _p(TABLE2, 20.7, 7.1, top1=74.7, top5=92.0)),
    Row(AA_IN, "ResNet-50", "paper/imagenet_resnet50_none", _p(TABLE2, 25.6, 8.2, top1=76.4, top5=93.1)),
    Row(AA_IN, "SE-ResNet-50", "paper/imagenet_resnet50_se", _p(TABLE2, 28.1, 8.2, top1=77.5, top5=93.7)),
    Row(AA_IN, "AA-ResNet-50", "paper/imagenet_resnet50_aa", _p(TABLE2, 25.8, 8.3, top1=77.7, top5=93.8)),
    Row(AA_IN, "ResNet-101", "paper/imagenet_resnet101_none", _p(TABLE2, 44.5, 15.6, top1=77.9, top5=94.0)),
    Row(AA_IN, "SE-ResNet-101", "paper/imagenet_resnet101_se", _p(FIG1, top1=78.4)),
    Row(AA_IN, "AA-ResNet-101", "paper/imagenet_resnet101_aa", _p(TABLE2, 45.4, 16.1, top1=78.7, top5=94.4)),
    Row(AA_IN, "ResNet-152", "paper/imagenet_resnet152_none", _p(TABLE2_RECALLED, 60.2, 23.0, top1=78.4, top5=94.2)),
    Row(AA_IN, "SE-ResNet-152", "paper/imagenet_resnet152_se", _p(FIG1, top1=78.9)),
    Row(AA_IN, "AA-ResNet-152", "paper/imagenet_resnet152_aa", _p(TABLE2_RECALLED, 61.6, 23.8, top1=79.1, top5=94.6)),
    Row(AW_IN, "AW-ResNet-50", "paper/imagenet_resnet50_aw", _p(AW_ABSTRACT)),
    Row(AW_IN, "AW-SE-ResNet-50", "paper/imagenet_resnet50_aw_se", _p(AW_ABSTRACT, note=AW_ON_TOP)),
    Row(AW_IN, "AW-AA-ResNet-50", "paper/imagenet_resnet50_aw_aa", _p(AW_ABSTRACT, note=AW_ON_TOP)),
    Row(AW_IN, "AW-ResNet-101", "paper/imagenet_resnet101_aw", _p(AW_ABSTRACT, note="+1.00 top-1 over ResNet-101")),
    *(
        Row(
            MNAS,
            f"{prefix}MnasNet-A1 {width}",
            f"paper/imagenet_mnasnet_a1_{tag}_{variant}",
            _p(MNAS_TABLE, numbers[0], top1=numbers[1], top5=numbers[2]),
        )
        for width, tag, base, augmented in (
            ("0.75", "075", (2.91, 73.3, 91.3), (3.02, 73.9, 91.6)),
            ("1.0", "100", (3.89, 75.2, 92.4), (4.06, 75.7, 92.6)),
            ("1.25", "125", (5.26, 76.7, 93.2), (5.53, 77.2, 93.6)),
            ("1.4", "140", (6.10, 77.2, 93.5), (6.44, 77.7, 93.8)),
        )
        for prefix, variant, numbers in (("", "none", base), ("AA-", "aa", augmented))
    ),
    Row(POS, "AA-ResNet-50, no position encoding", "paper/imagenet_resnet50_aa_pos_none", _p(POS_TABLE, top1=77.5)),
    Row(POS, "AA-ResNet-50, 2-D sine", "paper/imagenet_resnet50_aa_pos_sine", _p(POS_TABLE, top1=77.5)),
    Row(POS, "AA-ResNet-50, CoordConv", "paper/imagenet_resnet50_aa_pos_coordconv", _p(POS_TABLE, top1=77.5)),
    Row(POS, "AA-ResNet-50, relative", "paper/imagenet_resnet50_aa_pos_relative", _p(POS_TABLE, top1=77.7)),
    Row(
        POS,
        "AA-ResNet-50, fully attentional, no position encoding",
        "paper/imagenet_resnet50_aa_full_pos_none",
        _p(POS_TABLE, note="the fully attentional baseline: relative encoding gives +2.8 top-1 over it"),
    ),
    Row(
        POS,
        "AA-ResNet-50, fully attentional, relative",
        "paper/imagenet_resnet50_aa_full",
        _p(POS_TABLE, note="+2.8 top-1 over the fully attentional row without encoding"),
    ),
    Row(CIFAR, "WRN-28-10", "paper/cifar100_wrn28_10_none", _p(CIFAR_TABLE, 36.3, top1=80.3)),
    Row(CIFAR, "SE-WRN-28-10", "paper/cifar100_wrn28_10_se", _p(CIFAR_TABLE, 36.5, top1=81.0)),
    Row(CIFAR, "AA-WRN-28-10", "paper/cifar100_wrn28_10_aa", _p(CIFAR_TABLE, 36.2, 10.9, top1=81.6)),
    Row(
        RETINA,
        "RetinaNet R50",
        "paper/coco_retinanet_resnet50_none",
        _p(RETINA_TABLE, 33.4, 182, ap=36.8, ap50=54.5, ap75=39.5),
    ),
    Row(
        RETINA,
        "RetinaNet SE-R50",
        "paper/coco_retinanet_resnet50_se",
        _p(RETINA_TABLE, 35.9, 183, ap=36.5, ap50=54.0, ap75=39.1),
    ),
    Row(
        RETINA,
        "RetinaNet AA-R50",
        "paper/coco_retinanet_resnet50_aa",
        _p(RETINA_TABLE, 33.1, 182, ap=38.2, ap50=56.5, ap75=40.7),
    ),
    Row(
        RETINA,
        "RetinaNet R101",
        "paper/coco_retinanet_resnet101_none",
        _p(RETINA_TABLE, 52.4, 243, ap=38.5, ap50=56.4, ap75=41.2),
    ),
    Row(
        RETINA,
        "RetinaNet SE-R101 (not a paper row)",
        "paper/coco_retinanet_resnet101_se",
        _p("ours: the paper's table has no SE-R101"),
    ),
    Row(
        RETINA,
        "RetinaNet AA-R101",
        "paper/coco_retinanet_resnet101_aa",
        _p(RETINA_TABLE, 51.7, 245, ap=39.2, ap50=57.8, ap75=41.9),
    ),
    Row(FRCNN, "Faster R-CNN R50-FPN", "paper/coco_faster_rcnn_resnet50_none", _p(AW_ABSTRACT)),
    Row(FRCNN, "Faster R-CNN AW-R50-FPN", "paper/coco_faster_rcnn_resnet50_aw", _p(AW_ABSTRACT)),
    Row(
        FRCNN,
        "Faster R-CNN AW-SE-R50-FPN",
        "paper/coco_faster_rcnn_resnet50_aw_se",
        _p(AW_ABSTRACT, note="up to +0.45 AP over the activation-attention model"),
    ),
    Row(FRCNN, "Faster R-CNN R101-FPN", "paper/coco_faster_rcnn_resnet101_none", _p(AW_ABSTRACT)),
    Row(
        FRCNN,
        "Faster R-CNN AW-R101-FPN",
        "paper/coco_faster_rcnn_resnet101_aw",
        _p(AW_ABSTRACT, note="+0.63 AP over Faster R-CNN R101-FPN"),
    ),
    Row(
        FRCNN,
        "Faster R-CNN AW-SE-R101-FPN",
        "paper/coco_faster_rcnn_resnet101_aw_se",
        _p(AW_ABSTRACT, note="up to +0.45 AP over the activation-attention model"),
    ),
    *(Row(MINI, f"ResNet-18 {a}", "mini_relations", {}, {"attention": a}) for a in ("none", "se", "aa", "aw")),
]
METRICS = ("top1", "top5", "ap", "ap50", "ap75")


# --- Our model: parameters and FLOPs ------------------------------------------------------------------------------


def required_values(experiment: str) -> list[str]:
    """The keys experiment `experiment` lists in its `required_values` (train.py stops until they are set)."""
    return list(OmegaConf.load(CONFIGS / "experiment" / f"{experiment}.yaml").get("required_values", []))


def compose_row(row: Row) -> Any:
    overrides = [f"experiment={row.experiment}", "data.root=/unused", *(f"{g}={o}" for g, o in row.choices.items())]
    overrides += [f"{key}=null" for key in required_values(row.experiment)]  # the model's shape only: nothing is read
    return compose_config(overrides)


def input_size(cfg: Any) -> tuple[int, int]:
    """(height, width) the row's model is counted at: the training image size of a classifier; a detector's
    canvas (task.detector.canvas), else DETECTION_INPUT (torchvision's 800 / 1333 resize)."""
    if "detection" not in cfg.data:
        return cfg.data.image_size, cfg.data.image_size
    canvas = cfg.task.get("detector", {}).get("canvas")
    return (canvas, canvas) if canvas else DETECTION_INPUT


def model_size(row: Row) -> dict[str, Any]:
    """{params, params_m, gflops, flops_at} of the row's model, built and counted on the meta device (aaconv.models.cost)."""
    from aaconv.models.cost import count_flops, count_params
    from aaconv.tasks import build_task

    cfg = compose_row(row)
    try:
        with torch.device("meta"):
            model = build_task(cfg).build_model()
    except TypeError as e:  # a row whose option the layers do not have yet
        return {"error": f"cannot build: {e}"}
    height, width = input_size(cfg)
    params = count_params(model)
    return {
        "params": params,
        "params_m": round(params / 1e6, 2),
        "gflops": round(count_flops(model, height, width) / 1e9, 2),
        "flops_at": f"{height}x{width}",
    }


def source_digest() -> str:
    """A digest of everything a model size depends on: the config tree, the library's source and this script."""
    digest = hashlib.sha256()
    for path in sorted([*CONFIGS.rglob("*.yaml"), *(REPO / "aaconv").rglob("*.py"), Path(__file__).resolve()]):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class SizeCache:
    """model_size() results in a JSON file per source digest; a changed config or layer starts a new file."""

    def __init__(self, enabled: bool = True):
        root = Path(os.environ.get("AACONV_CACHE", "~/.cache/aaconv")).expanduser() / "paper_table"
        self.path = root / f"sizes-{source_digest()}.json" if enabled else None
        self.sizes = json.loads(self.path.read_text()) if self.path and self.path.is_file() else {}
        self.changed = False

    def get(self, row: Row) -> dict[str, Any]:
        key = " ".join([row.experiment, *(f"{g}={o}" for g, o in row.choices.items())])
        if key not in self.sizes:
            self.sizes[key], self.changed = model_size(row), True
        return self.sizes[key]

    def save(self) -> None:
        if self.path and self.changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(json.dumps(self.sizes, indent=1))
            staging.replace(self.path)


# --- Our runs ----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    choices: dict[str, str]
    overrides: list[str]
    results: dict[str, Any]

    def cut_short(self) -> list[str]:
        """Why the run does not stand for its row: stopped by trainer.max_steps before its epochs ran, or
        evaluated on part of the validation split. Empty for a whole run (and for a results.json written
        before `stopped_by` / `eval_partial` existed)."""
        reasons = []
        if self.results.get("stopped_by", "epochs") != "epochs":
            reasons.append(f"stopped by trainer.{self.results['stopped_by']}")
        if self.results.get("eval_partial"):
            reasons.append("evaluated on part of the validation split (trainer.max_eval_batches)")
        return reasons

    def metric(self, key: str) -> Any:
        """results.json's `key` (top1, AP, ...) of the weights the run reports: the EMA's for a run trained with
        EMA. A results.json that says `weights` holds them under the plain name; an older one of an EMA run
        holds them as ema_<key> (its plain name: the model's). None when absent."""
        if "weights" not in self.results and f"ema_{key}" in self.results:
            return self.results[f"ema_{key}"]
        return self.results.get(key)

    def weights(self) -> str:
        """The weights whose metrics `metric` reads: "ema" or "model"."""
        return self.results.get("weights", "ema" if any(k.startswith("ema_") for k in self.results) else "model")


def find_runs(folders: Iterable[Path]) -> list[Run]:
    """Every run under `folders`: a results.json with the Hydra record of its choices (read as data)."""
    runs = []
    for folder in folders:
        for results_file in sorted(Path(folder).rglob("results.json")):
            record = results_file.parent / ".hydra"
            if not (record / "hydra.yaml").is_file():
                continue
            hydra = OmegaConf.load(record / "hydra.yaml").hydra
            choices = {k: str(v) for k, v in OmegaConf.to_container(hydra.runtime.choices, resolve=False).items()}
            overrides_file = record / "overrides.yaml"
            overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
            runs.append(Run(results_file.parent, choices, overrides, json.loads(results_file.read_text())))
    return runs


def row_choices(row: Row) -> dict[str, str]:
    """The group choices the row's runs have: the experiment's own overrides, then the row's."""
    content = OmegaConf.load(CONFIGS / "experiment" / f"{row.experiment}.yaml")
    own = {k.removeprefix("override /"): str(v) for d in content.get("defaults", []) for k, v in d.items()}
    return {**{g: o for g, o in own.items() if g in ("backbone", "attention")}, **row.choices}


def our_metrics(row: Row, runs: Sequence[Run], include_short: bool = False) -> dict[str, Any]:
    """Mean (and sample std over 2+ runs) of each metric over the row's runs; detection AP in percent. Runs cut
    short are left out (counted as `left_out`), or with `include_short` counted (as `short` too)."""
    wanted = {"experiment": row.experiment, **row_choices(row)}
    mine = [r for r in runs if all(r.choices.get(g) == o for g, o in wanted.items())]
    short = [r for r in mine if r.cut_short()]
    counts = {("short" if include_short else "left_out"): len(short)} if short else {}
    if not include_short:
        mine = [r for r in mine if not r.cut_short()]
    if not mine:
        return {"runs": 0, **counts}
    out: dict[str, Any] = {
        "runs": len(mine),
        **counts,
        "epochs": sorted({r.results.get("epochs") for r in mine}),
        "weights": sorted({r.weights() for r in mine}),
    }
    for metric in METRICS:
        key = metric.upper() if metric.startswith("ap") else metric  # results.json: top1, top5, AP, AP50, AP75
        scale = 100.0 if metric.startswith("ap") else 1.0
        values = [float(value) * scale for r in mine if (value := r.metric(key)) is not None]
        if values:
            out[metric] = round(statistics.fmean(values), 2)
            if len(values) > 1:
                out[f"{metric}_std"] = round(statistics.stdev(values), 2)
    return out


def table_rows(
    runs: Sequence[Run], tables: Sequence[str] | None, sizes: SizeCache | None, include_short: bool = False
) -> list[dict[str, Any]]:
    """One {table, row, experiment, paper, ours} object per row of the `tables` (all when empty)."""
    objects = []
    for row in ROWS:
        if tables and not any(t.lower() in row.table.lower() for t in tables):
            continue
        ours = {
            **(sizes.get(row) if sizes else {}),
            **our_metrics(row, runs, include_short),
            "command": row.command(),
        }
        delta = {k: round(ours[k] - v, 2) for k, v in row.paper.items() if isinstance(ours.get(k), float)}
        if delta:
            ours["delta"] = delta
        objects.append(
            {"table": row.table, "row": row.row, "experiment": row.experiment, "paper": row.paper, "ours": ours}
        )
    return objects


# --- Output ------------------------------------------------------------------------------------------------------


def _fmt(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} ± {std:g}" if std is not None else text


def _side_by_side(paper: dict[str, Any], ours: dict[str, Any], metric: str) -> str:
    """ "paper / ours" of one metric (ours: the runs' mean), "-" for a side without the number."""
    return f"{_fmt(paper.get(metric))} / {_fmt(ours.get(metric), ours.get(f'{metric}_std'))}"


def _short_note(ours: dict[str, Any]) -> str:
    """The row's runs cut short: ", 2 cut short" (counted: --include-short) or ", 2 cut short left out"."""
    if ours.get("short"):
        return f", {ours['short']} cut short"
    if ours.get("left_out"):
        return f", {ours['left_out']} cut short left out"
    return ""


def short_runs_line(runs: Sequence[Run], include_short: bool) -> str | None:
    """One line naming how many runs were cut short and why, and whether they count; None when none was."""
    short = [r for r in runs if r.cut_short()]
    if not short:
        return None
    reasons = sorted(Counter(reason for r in short for reason in r.cut_short()).items())
    why = "; ".join(f"{n} {reason}" for reason, n in reasons)
    if include_short:
        return f"note: {len(short)} of {len(runs)} runs are cut short ({why}): counted in ours, marked"
    left_out = f"{len(short)} of {len(runs)} runs left out of ours as cut short"
    return f"note: {left_out} ({why}); --include-short counts them"


def markdown(objects: Sequence[dict[str, Any]]) -> str:
    lines: list[str] = []
    for table in dict.fromkeys(o["table"] for o in objects):
        detection = any(o["experiment"].startswith("paper/coco") for o in objects if o["table"] == table)
        metric, others = ("ap", ("ap50", "ap75")) if detection else ("top1", ("top5",))
        names = " | ".join(f"{m.upper() if detection else 'top-5'} (paper / ours)" for m in others)
        lines += [
            "",
            f"### {table}",
            "",
            f"| row | params M (paper / ours) | GFLOPs (paper / ours) | input | {metric} | paper | ours | diff | "
            f"{names} | paper's source | command |",
            "|---|---|---|---|---|---|---|---|" + "---|" * len(others) + "---|---|",
        ]
        for o in (o for o in objects if o["table"] == table):
            paper, ours = o["paper"], o["ours"]
            if ours.get("runs"):
                runs = f"{ours['runs']} run{'s' * (ours['runs'] > 1)}{_short_note(ours)}"
                mine = f"{_fmt(ours.get(metric), ours.get(f'{metric}_std'))} ({runs})"
            else:
                mine = f"no run{_short_note(ours)}"
            note = f" ({paper['note']})" if "note" in paper else ""
            more = " | ".join(_side_by_side(paper, ours, m) for m in others)
            lines.append(
                f"| {o['row']} | {_fmt(paper.get('params_m'))} / {_fmt(ours.get('params_m'))} | "
                f"{_fmt(paper.get('gflops'))} / {_fmt(ours.get('gflops'))} | {_fmt(ours.get('flops_at'))} | {metric} | "
                f"{_fmt(paper.get(metric))}{note} | {mine} | {_fmt(ours.get('delta', {}).get(metric))} | {more} | "
                f"{_fmt(paper.get('source'))} | `{ours['command']}` |"
            )
    return "\n".join(lines).lstrip()


def sweep_table(folder: Path) -> str:
    """The jobs of a multirun folder sorted by their primary metric (best first), with each job's overrides."""
    runs = find_runs([folder])
    if not runs:
        raise DataError(
            f"no finished jobs (results.json with .hydra/) under {folder}; pass a multirun folder of train.py -m"
        )
    metric = "top1" if all("top1" in r.results for r in runs) else "AP"
    runs.sort(key=lambda r: -float(r.metric(metric) if r.metric(metric) is not None else -math.inf))
    lines = [f"| rank | {metric} | epochs | overrides | folder |", "|---|---|---|---|---|"]
    for rank, r in enumerate(runs, start=1):
        lines.append(
            f"| {rank} | {_fmt(r.metric(metric))} | {r.results.get('epochs')} | "
            f"{' '.join(r.overrides) or '-'} | {r.folder} |"
        )
    return "\n".join(lines)


def runs_of(folders: Sequence[Path]) -> list[Run]:
    """The runs under each of `folders` (find_runs); DataError for a folder that is missing or holds none."""
    runs = []
    for folder in folders:
        if not folder.is_dir():
            raise DataError(
                f"run folder {folder} does not exist; pass train.py's run or multirun folders (outputs/..., multirun/...)"
            )
        found = find_runs([folder])
        if not found:
            raise DataError(
                f"no finished runs (results.json with .hydra/) under {folder}; pass train.py's run or multirun folders"
            )
        runs += found
    return runs


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="folders searched for runs (results.json)")
    parser.add_argument("--format", choices=("md", "json"), default="md")
    parser.add_argument(
        "--plot", type=Path, help="write ours vs the paper per table (scripts/paper_plot.py) to this PNG"
    )
    parser.add_argument("--table", action="append", help="only tables whose name contains this (repeatable)")
    parser.add_argument("--no-count", action="store_true", help="skip building the models (no params / FLOPs)")
    parser.add_argument("--no-cache", action="store_true", help="recount params / FLOPs instead of reading the cache")
    parser.add_argument("--sweep", type=Path, help="summarise one multirun folder instead, sorted by its metric")
    parser.add_argument(
        "--include-short",
        action="store_true",
        help="count runs cut short (trainer.max_steps, trainer.max_eval_batches) in ours, marked",
    )
    args = parser.parse_args(argv)
    if args.sweep:
        print(sweep_table(args.sweep))
        return
    runs = runs_of(args.runs)
    if note := short_runs_line(runs, args.include_short):
        print(note, file=sys.stderr)
    sizes = None if args.no_count else SizeCache(enabled=not args.no_cache)
    objects = table_rows(runs, args.table, sizes, args.include_short)
    if sizes:
        sizes.save()
    print(json.dumps(objects, indent=1) if args.format == "json" else markdown(objects))
    if args.plot:
        from paper_plot import plot  # scripts/, beside this file

        plot(objects, args.plot)


if __name__ == "__main__":
    main()
