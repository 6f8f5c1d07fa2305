"""Training and inference throughput and peak memory of aaconv models beside timm / torchvision, in one process.

    python scripts/benchmark.py --models resnet50:none resnet50:se resnet50:aa resnet50:aw \\
        --batch 8 --image-size 160 --threads 1 --warmup 1 --repeats 5  # the CPU table of docs/performance.md
    python scripts/benchmark.py --models resnet50:aa --precision bf16 --channels-last --compile --batch 64
    python scripts/benchmark.py --task retinanet --models resnet50:none resnet50:aa --image-size 512 --batch 2
    python scripts/benchmark.py --models resnet50:aa --no-peers --grad-checkpointing --modes train --batch 32
    python scripts/benchmark.py --loader --data imagenet --data-root /data/imagenet --workers 4 8 --decode pil gpu
    python scripts/benchmark.py --models --loader --synthetic-jpeg 320 --batch 32 --image-size 224 --threads 1 \
        --device cpu --repeats 7 --clock process --loader-batches 4  # one worker beside timm (docs/performance.md)
    python scripts/benchmark.py --models resnet50:none resnet50:aa --image-size 256 \
        --peers botnet26t_256 halonet26t lambda_resnet26t     # what a timm user would pick instead of AA

A model is ``<backbone>:<attention>``, both option names of the config groups (``configs/backbone/``,
``configs/attention/``: every option, the composed ones such as aa_se, aw_aa, aw_cbam, aa_full included), composed
as ``python train.py backbone=<backbone> attention=<attention> '~experiment'`` composes them (Hydra's compose API,
aaconv.runs) and built by its task, which also gives the training loss; ``--set attention.aa.impl=reference``
overrides a key in the models whose config has it.

- Training step: forward, loss, backward and an SGD step (classification: cross-entropy on random images;
  detection: torchvision's summed losses on random images with three random boxes each). Inference:
  ``model.eval()`` forward under ``torch.inference_mode()``.
- Timing: ``--warmup`` steps per model excluded, then ``--repeats`` rounds that time ``--steps`` steps of every
  model in turn (interleaved, so a change in machine load hits all models alike); images/s is the median round,
  the spread (max - min) / median of the rounds says how noisy the run was. Ratios are given for the medians and,
  in brackets, for each model's fastest round (the least disturbed one on a shared machine).
- Peers, measured in the same process with the same settings: timm ``resnet50`` / ``seresnet50`` for
  classification, torchvision ``retinanet_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` (built by torchvision's
  own parts with frozen BN and 3 trainable stages, as our detection task) for detection. Ratio columns:
  ``none`` and ``se`` rows against the peer, other attention rows against our ``<backbone>:none`` (added if
  missing). ``--peers NAME ...`` adds timm models by name (e.g. BoTNet, HaloNet and LambdaNet:
  ``botnet26t_256 halonet26t lambda_resnet26t``, built for ``--image-size``), each against our first attention
  row (its ratio: the peer's speed over ours); a peer that cannot take the size reports its one-line error.
- GFLOPs: one forward of one image (``aaconv.models.cost.count_flops``, 2 FLOPs per multiply-add, AA counted on
  its reference path), counted on a copy built on the meta device.
- Peak memory: what one step adds at its peak to the memory held before it, i.e. activations, gradients and
  temporaries (parameters and optimizer state, held before, are not counted): CUDA ``max_memory_allocated``
  growth; CPU the growth of the resident-set high-water mark (VmHWM reset through ``/proc/self/clear_refs``, Linux).
- ``--grad-checkpointing``: each of our models also in a row ``<model> +ckpt`` with timm's
  ``set_grad_checkpointing()`` on (every backbone block recomputed in backward), against the model without it:
  the ratio columns give its speed and its peak training memory over the plain model's.
- ``--loader``: images/s of the ImageNet training loader alone (``--workers``), PIL decode or ``--decode gpu``
  (aaconv.data.gpu_decode), beside the training throughput of ``--models`` if given; then (unless ``--no-peers``)
  one worker's images/s of aaconv's training and evaluation pipelines beside timm's ``create_loader`` on the same
  files (``--input``: folder), loaded in-process, ``--repeats`` interleaved epochs on ``--clock``, with ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from aaconv.engine.runtime import add_cpu_allocator_option, set_cpu_allocator
from aaconv.errors import ConfigError, exit_on_user_error
from aaconv.models.cost import count_flops
from aaconv.runs import build_run, check_option, compose_config
from aaconv.tasks import Task, build_task
from aaconv.utils import cli
from aaconv.utils.grad_checkpointing import enable_grad_checkpointing

DETECTION_TASKS = ("retinanet", "faster_rcnn")
PEERS = {
    ("classification", "none"): "timm:resnet50",
    ("classification", "se"): "timm:seresnet50",
    ("retinanet", "none"): "torchvision:retinanet_resnet50_fpn",
    ("faster_rcnn", "none"): "torchvision:fasterrcnn_resnet50_fpn",
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Entry:
    """One model of the table and what was measured for it."""

    name: str
    model: nn.Module
    baseline: str | None = None
    train: list[float] = field(default_factory=list)  # seconds per step, one per round
    infer: list[float] = field(default_factory=list)
    peak_train_mib: float | None = None
    peak_infer_mib: float | None = None
    error: str | None = None


def benchmark_config(spec: str, task: str, image_size: tuple[int, int], overrides: list[str]) -> DictConfig:
    """The config train.py composes for model ``spec`` (``<backbone>:<attention>``) in ``task`` at ``image_size``,
    without an experiment's recipe: ImageNet's data group for classification (1000 classes), COCO's for detection
    (91 classes, frozen BN, 3 trainable stages, 256 FPN channels), no dataset read; then the ``--set`` overrides
    whose keys the config has (``attention.aa.impl`` applies to the AA rows, not to the ``none`` baseline)."""
    backbone, _, attention = spec.partition(":")
    attention = attention or "none"
    check_option("backbone", backbone, "--models")
    check_option("attention", attention, "--models")
    if task == "classification":
        data = ["task=classification", "data=imagenet", f"data.image_size={max(image_size)}"]
    else:
        data = [f"task={task}", "data=coco", f"data.detection.min_size={min(image_size)}"]
        data.append(f"data.detection.max_size={max(image_size)}")
    groups = ["~experiment", f"backbone={backbone}", f"attention={attention}", "data.root=unread", *data]
    base = compose_config(groups)
    return compose_config([*groups, *(o for o in overrides if has_key(base, o.partition("=")[0]))])


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` of an override is in ``cfg`` (Hydra's +, ++ and ~ overrides count as present:
    Hydra judges them)."""
    if key.startswith(("+", "~")):
        return True
    absent = object()
    return OmegaConf.select(cfg, key, default=absent) is not absent


def parse_size(text: str) -> tuple[int, int]:
    """ "224" -> (224, 224); "800x1333" -> (800, 1333) (height x width; detection only). At least 32 px a side,
    the backbones' total stride."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) >= 32 for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides >= 32 (e.g. 224, 800x1333), got {text!r}")
    return int(parts[0]), int(parts[-1])


def build_ours(spec: str, task: str, image_size: tuple[int, int], overrides: list[str]) -> nn.Module:
    """Our model ``spec``, built by its task from ``benchmark_config`` as train.py builds it."""
    return build_run(benchmark_config(spec, task, image_size, overrides)).model


def build_peer(name: str, image_size: tuple[int, int]) -> nn.Module:
    library, _, model = name.partition(":")
    if library == "timm":
        import timm

        return timm.create_model(model, num_classes=1000)
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = resnet50(norm_layer=FrozenBatchNorm2d)
    sizes = {"min_size": min(image_size), "max_size": max(image_size)}
    if model == "retinanet_resnet50_fpn":  # torchvision's builder, without its pretrained-weights switch
        fpn = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        return RetinaNet(fpn, num_classes=91, **sizes)
    return FasterRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, **sizes)


def make_batch(task: str, batch: int, image_size: tuple[int, int], device: torch.device, channels_last: bool) -> tuple:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *image_size, generator=g).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if task == "classification":
        return images, torch.randint(0, 1000, (batch,), generator=g).to(device)
    targets = []
    for _ in range(batch):
        extent = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32)  # x, y
        corner = torch.rand(3, 2, generator=g) * extent * 0.6
        size = (0.1 + 0.3 * torch.rand(3, 2, generator=g)) * extent
        boxes = torch.cat([corner, torch.minimum(corner + size, extent - 1)], dim=1)
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(1, 91, (3,), generator=g).to(device)})
    return list(images), targets


class Runner:
    """Runs one training step (the loss of ``task``, as in training) or one inference forward of a model under the
    chosen precision."""

    def __init__(self, task: Task, device: torch.device, precision: str, batch: tuple):
        self.task, self.device, self.batch = task, device, batch
        dtype = PRECISIONS[precision]
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
        )
        self.use_scaler = precision == "fp16" and device.type == "cuda"
        self.optimizers: dict[int, tuple[torch.optim.Optimizer, Any]] = {}

    def _optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        if id(model) not in self.optimizers:
            params = [p for p in model.parameters() if p.requires_grad]
            scaler = torch.amp.GradScaler(self.device.type) if self.use_scaler else None
            self.optimizers[id(model)] = (torch.optim.SGD(params, lr=1e-4, momentum=0.9), scaler)
        return self.optimizers[id(model)]

    def train_step(self, model: nn.Module) -> None:
        optimizer, scaler = self._optimizer(model)
        model.train()
        with self.autocast():
            loss, _ = self.task.training_loss(model, self.batch, self.device)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def infer_step(self, model: nn.Module) -> None:
        model.eval()
        with torch.inference_mode(), self.autocast():
            model(self.batch[0])

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _status_kb(name: str) -> int:
    return int(re.search(rf"{name}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def peak_mib(step: Callable[[], None], runner: Runner) -> float:
    """Peak memory of one call of ``step`` (see the module docstring for what it counts on each device)."""
    if runner.device.type == "cuda":
        runner.sync()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step()
        runner.sync()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = _status_kb("VmRSS")
    step()
    return (_status_kb("VmHWM") - start) / 2**10


def guarded(entry: Entry, call: Callable[[], Any]) -> None:
    """Runs ``call`` unless ``entry`` already failed; a CUDA out-of-memory error marks the entry instead."""
    if entry.error is not None:
        return
    try:
        call()
    except torch.cuda.OutOfMemoryError as e:
        entry.error = f"OOM ({str(e).splitlines()[0][:60]})"
        entry.train.clear()
        entry.infer.clear()
        torch.cuda.empty_cache()


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def timed(step: Callable[[], None], runner: Runner, steps: int, clock: str = "wall") -> float:
    runner.sync()
    now = CLOCKS[clock]
    begin = now()
    for _ in range(steps):
        step()
    runner.sync()
    return (now() - begin) / steps


def timm_peer(name: str, image_size: tuple[int, int], baseline: str | None) -> Entry:
    """timm's ``name`` built for ``image_size`` (models with fixed-size attention layers take ``img_size``); a
    model that cannot run at that size becomes a row with its one-line error (checked on the meta device)."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"no timm model {name!r} in --peers; e.g. botnet26t_256 halonet26t lambda_resnet26t")

    def create() -> nn.Module:
        try:
            return timm.create_model(name, num_classes=1000, img_size=image_size)
        except TypeError:  # a model without fixed-size layers has no img_size argument
            return timm.create_model(name, num_classes=1000)

    try:
        with torch.device("meta"):
            create().eval()(torch.empty(1, 3, *image_size))
    except (AssertionError, RuntimeError, ValueError) as e:
        entry = Entry(f"timm:{name}", nn.Identity(), baseline)
        size = "x".join(map(str, image_size))
        message = str(e).strip().splitlines()[0][:60] if str(e).strip() else type(e).__name__
        entry.error = f"cannot run at {size} px: {message}"
        return entry
    return Entry(f"timm:{name}", create(), baseline)


def meta_flops(entry: Entry, args: argparse.Namespace) -> float | None:
    """GFLOPs of one image's forward, counted on a copy of the entry's model built on the meta device."""
    if entry.error is not None:
        return None
    library, _, name = entry.name.partition(":")
    with torch.device("meta"):
        if library == "timm" and name not in {p.partition(":")[2] for p in PEERS.values()}:
            model = timm_peer(name, args.image_size, None).model
        elif library in ("timm", "torchvision"):
            model = build_peer(entry.name, args.image_size)
        else:
            model = build_ours(entry.name.removesuffix(" +ckpt"), args.task, args.image_size, args.set)
    return count_flops(model, *args.image_size) / 1e9


def check_overrides(specs: list[str], args: argparse.Namespace) -> None:
    """ConfigError for a ``--set`` key that no model of ``specs`` has (a typo would otherwise apply to none)."""
    configs = [benchmark_config(spec, args.task, args.image_size, []) for spec in specs]
    for override in args.set:
        key = override.partition("=")[0]
        if "." not in key:
            raise ConfigError(f"--set {override}: --set takes keys (group.key=value); choose groups in --models")
        if not any(has_key(cfg, key) for cfg in configs):
            raise ConfigError(
                f"--set {override}: no model of --models has the key {key}; see python train.py --cfg job"
            )


def build_entries(args: argparse.Namespace, device: torch.device) -> list[Entry]:
    specs = list(dict.fromkeys(args.models))
    check_overrides(specs, args)
    for spec in list(specs):  # attention rows compare with the same backbone without attention (or, with
        backbone, _, attention = spec.partition(":")  # --grad-checkpointing, the checkpointed row with the plain one)
        if attention not in ("", "none", "se") and f"{backbone}:none" not in specs and not args.grad_checkpointing:
            specs.insert(0, f"{backbone}:none")
    entries = []
    for spec in specs:
        backbone, _, attention = spec.partition(":")
        attention = attention or "none"
        peer = PEERS.get((args.task, attention)) if args.peers and backbone == "resnet50" else None
        if peer and not any(e.name == peer for e in entries):
            entries.append(Entry(peer, build_peer(peer, args.image_size)))
        entries.append(Entry(spec, build_ours(spec, args.task, args.image_size, args.set), peer or f"{backbone}:none"))
        if args.grad_checkpointing:
            checkpointed = build_ours(spec, args.task, args.image_size, args.set)
            enable_grad_checkpointing(checkpointed)
            entries.append(Entry(f"{spec} +ckpt", checkpointed, spec))
    attention_rows = [s for s in specs if s.partition(":")[2] not in ("", "none", "se")]
    for name in dict.fromkeys(args.extra_peers):
        entries.append(timm_peer(name, args.image_size, attention_rows[0] if attention_rows else None))
    for entry in entries:
        if entry.baseline == entry.name:
            entry.baseline = None
        entry.model.to(device)
        if args.channels_last:
            entry.model.to(memory_format=torch.channels_last)
        if args.compile:
            entry.model = torch.compile(entry.model)
    return entries


def run_models(args: argparse.Namespace, device: torch.device) -> list[Entry]:
    entries = build_entries(args, device)
    loss_task = build_task(benchmark_config(args.models[0], args.task, args.image_size, args.set))
    runner = Runner(
        loss_task,
        device,
        args.precision,
        make_batch(args.task, args.batch, args.image_size, device, args.channels_last),
    )
    modes = [m for m in ("train", "infer") if m in args.modes]

    def step(entry: Entry, mode: str) -> None:
        getattr(runner, f"{mode}_step")(entry.model)

    def record_round(entry: Entry, mode: str) -> None:
        getattr(entry, mode).append(timed(partial(step, entry, mode), runner, args.steps, args.clock))

    def record_peak(entry: Entry, mode: str) -> None:
        setattr(entry, f"peak_{mode}_mib", peak_mib(partial(step, entry, mode), runner))

    for entry in entries:
        for mode in modes:
            for _ in range(args.warmup):
                guarded(entry, partial(step, entry, mode))
    for _ in range(args.repeats):
        for entry in entries:
            for mode in modes:
                guarded(entry, partial(record_round, entry, mode))
    for entry in entries:
        for mode in modes:
            guarded(entry, partial(record_peak, entry, mode))
    live = [e for e in entries if e.error is None]
    if args.profile:
        for entry in live:
            print(f"\n## profile: {entry.name}, one training step\n")
            print(profile_table(partial(runner.train_step, entry.model), device, args.profile))
    return entries


def profile_table(step: Callable[[], None], device: torch.device, rows: int) -> str:
    """torch.profiler's top ops of one call by self time, as a markdown table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    lines = ["| op | self ms | share | calls |", "|---|---|---|---|"]
    for event in events[:rows]:
        value = getattr(event, key)
        lines.append(f"| {event.key} | {value / 1e3:.1f} | {100 * value / total:.0f}% | {event.count} |")
    return "\n".join(lines)


def summarize(entry: Entry, batch: int, gflops: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": entry.name,
        "baseline": entry.baseline,
        "error": entry.error,
        "params_m": sum(p.numel() for p in entry.model.parameters()) / 1e6 or None,  # None: not built
        "gflops": gflops,
    }
    for mode in ("train", "infer"):
        times = getattr(entry, mode)
        if times:
            median = statistics.median(times)
            row[f"{mode}_images_per_s"] = batch / median
            row[f"{mode}_best_images_per_s"] = batch / min(times)
            row[f"{mode}_spread"] = (max(times) - min(times)) / median
            row[f"{mode}_seconds"] = times
        row[f"peak_{mode}_mib"] = getattr(entry, f"peak_{mode}_mib")
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    by_name = {r["model"]: r for r in rows}
    for row in rows:
        base = by_name.get(row["baseline"] or "")
        for mode in ("train", "infer"):
            key, best = f"{mode}_images_per_s", f"{mode}_best_images_per_s"
            if base and key in row and key in base:
                row[f"{mode}_ratio"] = row[key] / base[key]
                row[f"{mode}_best_ratio"] = row[best] / base[best]
            peak, base_peak = row.get(f"peak_{mode}_mib"), base.get(f"peak_{mode}_mib") if base else None
            if peak is not None and base_peak:
                row[f"peak_{mode}_ratio"] = peak / base_peak


def markdown(rows: list[dict[str, Any]], modes: list[str]) -> str:
    head = ["model", "params (M)", "GFLOPs"]
    for mode in modes:
        head += [f"{mode} img/s", f"{mode} spread", f"{mode} vs (best-round ratio)", f"{mode} peak MiB (ratio)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        gflops = row.get("gflops")
        params = row["params_m"]
        cells = [row["model"], f"{params:.2f}" if params else "-", f"{gflops:.2f}" if gflops is not None else "-"]
        for mode in modes:
            if row["error"]:
                cells += [row["error"], "-", "-", "-"]
                continue
            ratio = row.get(f"{mode}_ratio")
            vs = f"{ratio:.2f}x ({row[f'{mode}_best_ratio']:.2f}x) {row['baseline']}" if ratio is not None else "-"
            peak, peak_ratio = row[f"peak_{mode}_mib"], row.get(f"peak_{mode}_ratio")
            cells += [
                f"{row[f'{mode}_images_per_s']:.2f}",
                f"{100 * row[f'{mode}_spread']:.0f}%",
                vs,
                (f"{peak:.0f}" if peak is not None else "-") + (f" ({peak_ratio:.2f}x)" if peak_ratio else ""),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_loader(args: argparse.Namespace, device: torch.device) -> dict[str, list[dict[str, Any]]]:
    """Images/s of the training loader alone for every (decode, workers) pair, then, unless ``--no-peers``, the
    per-worker comparison with timm (``per_worker_rows``)."""
    from aaconv.data.gpu_decode import loader_throughput

    cfg = compose_config(["~experiment", f"data={args.data}", *args.set])
    data = OmegaConf.to_container(cfg.data, resolve=True)  # a missing root stays "???"
    if args.synthetic_jpeg:
        root = synthetic_jpegs(args.synthetic_jpeg)
        data.update(root=str(root), generate=None, train_split="train", val_split="val", num_classes=10)
    elif args.data_root:
        data["root"] = args.data_root
    if data.get("root") in (None, "???"):
        raise ConfigError(f"--loader with --data {args.data} needs --data-root DIR (or --synthetic-jpeg N)")
    data["image_size"] = args.image_size[0]
    rows = []
    print("| decode | workers | images/s |\n|---|---|---|")
    for decode in args.decode:
        for workers in args.workers:
            rate = loader_throughput(
                data,
                decode=decode,
                workers=workers,
                batch_size=args.batch,
                image_size=args.image_size[0],
                batches=args.loader_batches,
                device=device,
            )
            rows.append({"decode": decode, "workers": workers, "images_per_s": rate})
            print(f"| {decode} | {workers} | {rate:.1f} |", flush=True)
    if not args.peers:
        return {"workers": rows}
    print("\n| input | pipeline | aaconv img/s | timm img/s | aaconv / timm | spread aaconv, timm |")
    print("|---|---|---|---|---|---|")
    per_worker = [
        row for kind in args.input for row in per_worker_rows(data, kind, args.batch, args.repeats, args.clock)
    ]
    return {"workers": rows, "per_worker": per_worker}


def aaconv_loaders(data: dict[str, Any], batch: int) -> dict[tuple[str, str], Any]:
    """{(pipeline, "aaconv"): loader}: ``ClassificationTask``'s datasets of ``data`` (any registered format) in the
    training / evaluation loaders of aaconv.engine.loaders, loading in-process (what one worker does per batch)."""
    from aaconv.engine.loaders import build_eval_loader, build_train_loader
    from aaconv.tasks.classification import ClassificationTask

    one = {**data, "workers": 0, "decode": "cpu"}
    task = ClassificationTask(backbone={}, attention={}, data=one)
    train, val = task.build_datasets()
    shard = {"batch_size": batch, "data": one, "collate_fn": task.collate_fn, "rank": 0, "world_size": 1}
    return {
        ("train", "aaconv"): build_train_loader(train, **shard, seed=0)[0],
        ("val", "aaconv"): build_eval_loader(val, **shard),
    }


def timm_loaders(data: dict[str, Any], batch: int) -> dict[tuple[str, str], Any]:
    """{(pipeline, "timm"): loader}: timm's ``create_dataset`` + ``create_loader`` over the ImageFolder splits of
    ``data`` with the same recipe and timm train.py's prefetcher (workers return uint8 batches; the normalisation it
    does on the device is not timed), loading in-process."""
    from timm.data import create_dataset, create_loader

    from aaconv.data import dataset_root

    root, size = dataset_root(data, "imagefolder"), data["image_size"]
    common = {
        "input_size": (3, size, size),
        "batch_size": batch,
        "num_workers": 0,
        "persistent_workers": False,
        "use_prefetcher": True,
        "device": torch.device("cpu"),
    }
    timm_train = create_dataset("", root=str(root / data["train_split"]), is_training=True)
    timm_val = create_dataset("", root=str(root / data["val_split"]))
    eval_options = {"crop_pct": data["crop_pct"], **data["transform"]["eval"]}
    return {
        ("train", "timm"): create_loader(timm_train, is_training=True, **common, **data["transform"]["train"]).loader,
        ("val", "timm"): create_loader(timm_val, is_training=False, **common, **eval_options).loader,
    }


def folder_loaders(data: dict[str, Any], batch: int) -> dict[tuple[str, str], Any]:
    """aaconv's and timm's loaders over the same ImageFolder tree."""
    return {**aaconv_loaders(data, batch), **timm_loaders(data, batch)}


def shard_loaders(data: dict[str, Any], batch: int) -> dict[tuple[str, str], Any]:
    """aaconv reading the tree's images from shards (written once beside it by aaconv.data.shard_writer, one
    part per split), timm reading the tree itself: its shard readers take other formats (wds, hfds, tfds)."""
    from aaconv.data import dataset_root
    from aaconv.data.shard_sources import imagefolder_source
    from aaconv.data.shard_writer import write_shards
    from aaconv.data.shards import MANIFEST

    root = dataset_root(data, "imagefolder")
    shards = root.parent / f"{root.name}-shards"
    if not (shards / MANIFEST).is_file():
        classes, splits = imagefolder_source(root, [data["train_split"], data["val_split"]])
        write_shards(shards, kind="classification", classes=classes, splits=splits, source=str(root), progress=False)
    from_shards = {**data, "format": "shards", "root": str(shards), "generate": None}
    return {**aaconv_loaders(from_shards, batch), **timm_loaders(data, batch)}


LOADER_INPUTS = {"folder": folder_loaders, "shards": shard_loaders}


def epoch_rate(loader: Any, batches: int | None = None, clock: str = "wall") -> float:
    """Images/s of one pass over ``loader`` (its first ``batches`` batches when given) on ``clock``."""
    now = CLOCKS[clock]
    count, begin = 0, now()
    for index, (images, _) in enumerate(loader):
        count += images.shape[0]
        if batches is not None and index + 1 == batches:
            break
    return count / (now() - begin)


def per_worker_rows(data: dict[str, Any], kind: str, batch: int, repeats: int, clock: str) -> list[dict[str, Any]]:
    """aaconv's training and evaluation loaders beside timm's on input ``kind``, one worker's work each (in-process
    loading): after a one-batch warm-up, ``repeats`` rounds each time one epoch of every loader in turn on
    ``clock`` (process: the CPU time of this process, one core's work with --threads 1); images/s is the median
    round, the ratio aaconv's median over timm's."""
    loaders = LOADER_INPUTS[kind](data, batch)
    rounds: dict[tuple[str, str], list[float]] = {key: [] for key in loaders}
    for loader in loaders.values():
        epoch_rate(loader, batches=1)
    for _ in range(repeats):
        for key, loader in loaders.items():
            rounds[key].append(epoch_rate(loader, clock=clock))
    rows = []
    for pipeline in ("train", "val"):
        ours, timm = rounds[(pipeline, "aaconv")], rounds[(pipeline, "timm")]
        row = {
            "input": kind,
            "pipeline": pipeline,
            "aaconv_images_per_s": statistics.median(ours),
            "timm_images_per_s": statistics.median(timm),
            "aaconv_rounds": ours,
            "timm_rounds": timm,
        }
        row["ratio"] = row["aaconv_images_per_s"] / row["timm_images_per_s"]
        spreads = [(max(r) - min(r)) / statistics.median(r) for r in (ours, timm)]
        print(
            f"| {kind} | {pipeline} | {row['aaconv_images_per_s']:.1f} | {row['timm_images_per_s']:.1f} | "
            f"{row['ratio']:.2f}x | {100 * spreads[0]:.0f}%, {100 * spreads[1]:.0f}% |",
            flush=True,
        )
        rows.append(row)
    return rows


def synthetic_jpegs(count: int, folder: Path = Path("/tmp/aaconv-synthetic-jpeg")) -> Path:
    """``count`` ImageNet-like JPEGs in ``folder/train/<class>/`` and ``count // 2`` in ``folder/val/<class>/``
    (10 classes, quality 90): 500x375, every tenth 2000x1500; natural-image-like content, noise at three scales
    upsampled and blended (a spectrum falling with frequency)."""
    import numpy as np
    from PIL import Image

    folder = folder / f"{count}-large10"
    done = folder / ".done"
    if not done.exists():
        rng = np.random.default_rng(0)
        for split, number in (("train", count), ("val", count // 2)):
            for index in range(number):
                width, height = (2000, 1500) if index % 10 == 9 else (500, 375)
                layers = [
                    Image.fromarray(rng.integers(0, 256, (height // cell, width // cell, 3), dtype=np.uint8)).resize(
                        (width, height), Image.BICUBIC
                    )
                    for cell in (60, 12, 3)
                ]
                image = Image.blend(Image.blend(layers[0], layers[1], 0.35), layers[2], 0.15)
                path = folder / split / f"c{index % 10}" / f"{index}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=90)
        done.touch()
    return folder


def device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({threads} threads)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="*",
        default=["resnet50:none", "resnet50:se", "resnet50:aa", "resnet50:aw"],
        help="<backbone>:<attention> option names (configs/backbone, configs/attention)",
    )
    parser.add_argument("--task", default="classification", choices=("classification", *DETECTION_TASKS))
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="GROUP.KEY=VALUE",
        help="config overrides, e.g. attention.aa.impl=reference backbone.attention_stages=[3,4]",
    )
    parser.add_argument("--batch", type=cli.positive_int, default=8)
    parser.add_argument(
        "--image-size",
        type=parse_size,
        default=(160, 160),
        metavar="N|HxW",
        help="input size; HxW (e.g. 800x1333) for detection",
    )
    parser.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (peers too)")
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=("train", "infer"))
    parser.add_argument("--warmup", type=cli.positive_int, default=2, help="untimed steps per model and mode")
    parser.add_argument("--repeats", type=cli.positive_int, default=5, help="timed rounds; images/s is their median")
    parser.add_argument("--steps", type=cli.positive_int, default=1, help="steps per model in each round")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=tuple(CLOCKS),
        help="process: the process's CPU time per step instead of wall time (CPU, --threads 1, on a shared machine)",
    )
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="also run each of our models with gradient checkpointing (a '<model> +ckpt' row against it)",
    )
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip timm / torchvision peers")
    parser.add_argument(
        "--peers",
        dest="extra_peers",
        nargs="+",
        default=[],
        metavar="TIMM_MODEL",
        help="timm models added as peers, e.g. botnet26t_256 halonet26t lambda_resnet26t",
    )
    parser.add_argument("--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=cli.positive_int, default=torch.get_num_threads(), help="CPU intra-op threads"
    )
    add_cpu_allocator_option(parser)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print torch.profiler's top N ops of one training step per model",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--loader", action="store_true", help="measure the training data loader alone")
    parser.add_argument("--data", default="imagenet", help="data option for --loader (configs/data)")
    parser.add_argument("--data-root", help="dataset folder for --loader")
    parser.add_argument(
        "--synthetic-jpeg",
        type=int,
        default=0,
        metavar="N",
        help="--loader on N generated JPEGs (500x375, every tenth 2000x1500; N / 2 more for val) instead of --data-root",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        default=["folder"],
        choices=tuple(LOADER_INPUTS),
        help="--loader's inputs for the timm comparison (shards: the folder converted once, read through litdata)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="--loader worker counts")
    parser.add_argument("--decode", nargs="+", default=["pil"], choices=("pil", "gpu"), help="--loader decoders")
    parser.add_argument(
        "--loader-batches", type=cli.positive_int, default=20, help="--loader batches timed after 2 warm-up"
    )
    return parser.parse_args(argv)


def report(rows: list[dict[str, Any]], modes: list[str]) -> str:
    """The markdown table of rows (as in the JSON), ratios added."""
    add_ratios(rows)
    return markdown(rows, modes)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_cpu_allocator(args.cpu_allocator)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = "x".join(map(str, dict.fromkeys(args.image_size)))
    if args.task == "classification" and args.image_size[0] != args.image_size[1]:
        raise ConfigError(f"classification takes a square --image-size N, got {size}")
    header = (
        f"# {device_name(device, args.threads)}, torch {torch.__version__}; task {args.task}, "
        f"batch {args.batch}, "
        f"{size} px, {args.precision}, channels_last={args.channels_last}, compile={args.compile}; "
        f"median of {args.repeats} rounds x {args.steps} steps after {args.warmup} warm-up; {args.clock} clock; "
        f"{args.cpu_allocator} CPU allocator"
    )
    result: dict[str, Any] = {
        "device": device_name(device, args.threads),
        "torch": torch.__version__,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if args.loader:
        print(f"# loader: data={args.data}, batch {args.batch}, {size} px\n")
        result["loader"] = run_loader(args, device)
    if args.models:
        rows = [summarize(e, args.batch, meta_flops(e, args)) for e in run_models(args, device)]
        print(header + "\n")
        print(report(rows, [m for m in ("train", "infer") if m in args.modes]), flush=True)
        result["models"] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
