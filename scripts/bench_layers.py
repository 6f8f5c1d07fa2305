"""Time and peak memory of one forward+backward of the attention layers, beside timm's attention layers.

AAConv2d's formulations (arXiv 1904.09925) against timm's ``BottleneckAttn`` (BoTNet, arXiv 2101.11605: the same
2-D relative attention), ``HaloAttn`` (blocked local attention, arXiv 2103.12731) and ``LambdaLayer`` (arXiv
2102.08602) at equal channels and heads, and AWConv2d (arXiv 2108.08205) against a plain nn.Conv2d::

    python scripts/bench_layers.py                           # AA vs the timm peers, AW vs conv (batch 4, 256 ch)
    python scripts/bench_layers.py --sizes 100x168 --batch 1 # a detection-sized map
    python scripts/bench_layers.py --channels 128 --dk 24 --dv 16 --batch 2 --sizes 64x64 \
        --kinds aa-auto aa-reference                         # AA-ResNet's kappa/upsilon against the paper's path
    python scripts/bench_layers.py --dtype bf16 --backends   # CUDA: under autocast, plus which SDPA kernels
                                                             # accept the fused path at each size
    python scripts/bench_layers.py --aw-stages 64x40 128x20 256x10 512x5 --batch 8   # AW per ResNet-50 stage
    python scripts/bench_layers.py --aa-maps 7x7 14x14 28x28 56x56 --batch 8   # AA's formulations per map

The layers: ``aa-<impl>`` is ``AAConv2d(C, C, 3, dk, dv, heads, impl)`` (default: fully attentional, dk = dv = C);
``botnet`` is ``BottleneckAttn(C, C, feat_size, num_heads=heads)`` (head dim C / heads, as ours at dk = C);
``halonet`` is ``HaloAttn(C, C, feat_size, num_heads=heads)`` with the largest block <= 8 dividing both sides
and halo block // 2 (timm: 8 and 3); ``lambda`` is ``LambdaLayer(C, C, feat_size, num_heads=heads)`` (timm's
defaults: 16 key dims, a 9x9 local position lambda); ``aw-<impl>`` is ``AWConv2d(C, C, 3)``; ``conv`` is
``nn.Conv2d(C, C, 3)``. The ratio columns divide the peer's time (and memory) by the first ``aa-`` kind's
(``aw-auto``'s for ``conv``): above 1, ours is faster (smaller).

``--aw-stages CxS ...`` times AWConv2d's formulations against a plain conv of each shape (C channels in and out,
S x S map, stride 1) in one process, interleaved over rounds (so machine load hits all alike), and prints the
median round's speed relative to the conv: the per-layer table behind AW's ``impl="auto"`` rule.
``--aa-maps HxW ...`` does the same for AAConv2d's trainable formulations (the table behind AA's ``impl="auto"``),
with timm's BottleneckAttn beside the fully attentional layer (an interleaved speed comparison).
``--aa-parts HxW ...`` splits the fully attentional layer and BottleneckAttn into their parts, interleaved: each
whole layer, each attention core alone, and AA's output projection W_O (which BottleneckAttn does not have).

Each case of the main table runs in a fresh subprocess so allocator state cannot leak between cases; ``--rounds N``
measures every case N times, in reverse order every other round, and reports the medians (on a machine whose
load changes, e.g. ``--sizes 14x14 --kinds aa-auto botnet --rounds 5``). Peak memory:

- CPU: the process's resident-set high-water mark (VmHWM) is reset through /proc/self/clear_refs right
  before the first timed forward and read after the last backward; the table shows its growth over the
  resident size at that moment, i.e. everything the forward+backward allocated at its peak
  (activations kept for backward, temporaries, gradients). Linux only.
- CUDA: torch.cuda.max_memory_allocated() growth over the allocated memory before the first forward.

The (B, N_h, HW, HW) tensors of the paths that hold them (our reference path, BoTNet) are estimated first; a case
whose estimate exceeds 60% of the memory available is not run and reported as out of memory.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import timm
import torch
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.halo_attn import HaloAttn
from timm.layers.lambda_layer import LambdaLayer
from torch import nn

from aaconv.engine.runtime import add_cpu_allocator_option, set_cpu_allocator
from aaconv.layers import AAConv2d, AWConv2d
from aaconv.layers.aw import AW_IMPLS
from aaconv.layers.relative_attention import ATTENTION_IMPLS, TRAINABLE_IMPLS, auto_impl
from aaconv.utils import cli

DEFAULT_SIZES = ("14x14", "28x28", "56x56")
AA_KINDS = tuple(f"aa-{impl}" for impl in ATTENTION_IMPLS)
PEER_KINDS = ("botnet", "halonet", "lambda")
KINDS = (*AA_KINDS, *PEER_KINDS, *(f"aw-{impl}" for impl in AW_IMPLS), "conv")
DEFAULT_KINDS = ("aa-auto", *PEER_KINDS, "aw-auto", "conv")
AW_KINDS = tuple(AW_IMPLS[1:]) + ("auto",)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# logits, their relative part, softmax output and their gradients live at once in the backward of the paths
# that materialise them (our reference path, BoTNet)
HWHW_COPIES = 6


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def halo_block(size: tuple[int, int]) -> int:
    """HaloAttn's block: the largest side <= 8 (timm's default) that divides both sides of the map."""
    return max(b for b in range(1, 9) if size[0] % b == 0 and size[1] % b == 0)


def build(case: dict) -> nn.Module:
    channels, kind, heads, size = case["channels"], case["kind"], case["heads"], tuple(case["size"])
    if kind.startswith("aa-"):
        return AAConv2d(
            channels, channels, 3, dk=case["dk"], dv=case["dv"], num_heads=heads, impl=kind[3:], max_size=max(size)
        )
    if kind.startswith("aw-"):
        return AWConv2d(channels, channels, 3, impl=kind[3:])
    if kind == "botnet":
        return BottleneckAttn(channels, channels, feat_size=size, num_heads=heads)
    if kind == "halonet":
        block = halo_block(size)
        return HaloAttn(channels, channels, feat_size=size, num_heads=heads, block_size=block, halo_size=block // 2)
    if kind == "lambda":
        return LambdaLayer(channels, channels, feat_size=size, num_heads=heads)
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


def run_case(case: dict) -> dict:
    """Runs in the subprocess: the fastest repeat's milliseconds and the peak MiB of forward+backward."""
    device = torch.device(case["device"])
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    layer = build(case).to(device)
    x = torch.randn(case["batch"], case["channels"], *case["size"], device=device, requires_grad=True)
    dtype = DTYPES[case.get("dtype", "fp32")]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:  # loads kernels, fills pools, compiles flex; timm's peers only take their feat_size
        layer(x).float().sum().backward()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start_kb = _status_kb("VmRSS")
    now = CLOCKS[case.get("clock", "wall")]
    for _ in range(case["repeats"]):
        begin = now()
        with autocast:
            out = layer(x)
        out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(now() - begin)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - start_bytes) / 2**20
    else:
        peak_mib = (_status_kb("VmHWM") - start_kb) / 2**10
    result = {"ms": 1000 * min(times), "peak_mib": peak_mib}
    if case.get("profile"):
        result["profile"] = profile_table(lambda: layer(x).float().sum().backward(), autocast, case["profile"])
    return result


def profile_table(step, autocast, rows: int) -> str:
    """torch.profiler's top ``rows`` ops of one forward+backward by self CPU time, as a markdown table."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, autocast:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    lines = ["| op | self ms | share | calls |", "|---|---|---|---|"]
    for event in events[:rows]:
        share = 100 * event.self_cpu_time_total / total
        lines.append(f"| {event.key} | {event.self_cpu_time_total / 1e3:.1f} | {share:.0f}% | {event.count} |")
    return "\n".join(lines)


def interleaved_medians(
    layers: dict[str, nn.Module], x: torch.Tensor | dict[str, torch.Tensor], rounds: int, clock: str = "wall"
) -> dict[str, float]:
    """Median seconds of one forward+backward per layer, the layers taking turns each round (1 warm-up round); ``x``:
    every layer's input, or {layer: its input}."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    inputs = x if isinstance(x, dict) else dict.fromkeys(layers, x)
    now = CLOCKS[clock]
    for _ in range(rounds + 1):
        for name, layer in layers.items():
            begin = now()
            layer(inputs[name]).sum().backward()
            if inputs[name].is_cuda:
                torch.cuda.synchronize()
            times[name].append(now() - begin)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def aw_stage_table(stages: list[str], batch: int, device: str, clock: str = "wall", rounds: int = 7) -> str:
    """Median forward+backward time of AW's formulations relative to nn.Conv2d, per (channels x map) stage."""
    lines = [
        "| stage (channels, map) | conv ms | " + " | ".join(f"aw-{k}" for k in AW_KINDS) + " | auto picks |",
        "|---" * (len(AW_KINDS) + 3) + "|",
    ]
    for stage in stages:
        channels, size = (int(v) for v in stage.split("x"))
        torch.manual_seed(0)
        layers = {"conv": nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device)}
        layers.update({k: AWConv2d(channels, channels, 3, impl=k).to(device) for k in AW_KINDS})
        x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
        median = interleaved_medians(layers, x, rounds, clock)
        cells = [f"{median['conv'] / median[k]:.2f}x" for k in AW_KINDS]
        picked = layers["auto"].resolve_impl((size, size))
        lines.append(
            f"| {channels}, {size}x{size} | {1000 * median['conv']:.1f} | " + " | ".join(cells) + f" | {picked} |"
        )
    return "\n".join(lines)


def aa_map_table(maps: list[str], args: argparse.Namespace, rounds: int = 5) -> str:
    """Median forward+backward ms of AAConv2d's trainable formulations per map, interleaved in one process; for the
    fully attentional layer (dk = dv = channels) timm's BottleneckAttn of the same shape too, with auto's speed-up
    over it."""
    impls = [i for i in TRAINABLE_IMPLS[args.device] if i != "reference"]
    botnet = args.dk == args.dv == args.channels
    head = [f"aa-{i} ms" for i in impls] + (["botnet ms"] if botnet else [])
    tail = ["fastest AA", "auto picks"] + (["auto vs botnet"] if botnet else [])
    lines = ["| map | " + " | ".join(head + tail) + " |", "|---" * (len(head) + len(tail) + 1) + "|"]
    for text in maps:
        size = tuple(int(v) for v in text.split("x"))
        torch.manual_seed(0)
        layer = AAConv2d(
            args.channels, args.channels, 3, dk=args.dk, dv=args.dv, num_heads=args.heads, max_size=max(size)
        )
        layers = {impl: _with_impl(layer, impl) for impl in impls}
        if botnet:
            layers["botnet"] = BottleneckAttn(args.channels, args.channels, feat_size=size, num_heads=args.heads)
        x = torch.randn(args.batch, args.channels, *size, device=args.device, requires_grad=True)
        median = interleaved_medians({k: m.to(args.device) for k, m in layers.items()}, x, rounds, args.clock)
        head_dim = args.dk // args.heads
        picked = auto_impl(torch.device(args.device), head_dim, *size)
        cells = [f"{1000 * median[k]:.1f}" for k in layers]
        cells += [min(impls, key=median.get), picked]
        if botnet:
            cells.append(f"{median['botnet'] / median[picked]:.2f}x")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aa_parts_table(maps: list[str], args: argparse.Namespace, rounds: int = 7) -> str:
    """Where the fully attentional AA layer's time goes beside timm's BottleneckAttn, per map, interleaved in one
    process: each whole layer, each attention core alone (from a qkv map to the heads' output: AA's
    ``RelativeAttention2d``, BottleneckAttn with its qkv conv replaced by the identity) and AA's output projection
    W_O (the paper's, which BottleneckAttn does not have); median forward+backward ms."""
    lines = [
        "| map | aa layer | botnet layer | layer: aa vs botnet | aa core | botnet core | core: aa vs botnet | aa W_O |",
        "|---|---|---|---|---|---|---|---|",
    ]
    channels, heads = args.channels, args.heads
    for text in maps:
        size = tuple(int(v) for v in text.split("x"))
        torch.manual_seed(0)
        aa = AAConv2d(channels, channels, 3, dk=channels, dv=channels, num_heads=heads, max_size=max(size))
        botnet = BottleneckAttn(channels, channels, feat_size=size, num_heads=heads)
        botnet_core = deepcopy(botnet)
        botnet_core.qkv = nn.Identity()
        layers = {"aa": aa, "botnet": botnet, "aa core": aa.attention, "botnet core": botnet_core, "W_O": aa.proj}
        x = torch.randn(args.batch, channels, *size, device=args.device, requires_grad=True)
        qkv = torch.randn(args.batch, 3 * channels, *size, device=args.device, requires_grad=True)
        inputs = {"aa": x, "botnet": x, "aa core": qkv, "botnet core": qkv, "W_O": x}
        ms = {k: 1000 * t for k, t in interleaved_medians(layers, inputs, rounds, args.clock).items()}
        lines.append(
            f"| {text} | {ms['aa']:.2f} | {ms['botnet']:.2f} | {ms['botnet'] / ms['aa']:.2f}x | {ms['aa core']:.2f} | "
            f"{ms['botnet core']:.2f} | {ms['botnet core'] / ms['aa core']:.2f}x | {ms['W_O']:.2f} |"
        )
    return "\n".join(lines)


def interleaved_header(args: argparse.Namespace, shape: str, rounds: int) -> str:
    """The first line of an interleaved table: device, threads, versions, shape (``shape`` appended), protocol."""
    return (
        f"# {args.device}, {args.threads} threads, torch {torch.__version__}, timm {timm.__version__}; batch "
        f"{args.batch}{shape}; forward+backward, median of {rounds} interleaved "
        f"rounds, {args.clock} clock; {args.cpu_allocator} CPU allocator"
    )


def _with_impl(layer: AAConv2d, impl: str) -> AAConv2d:
    """A copy of ``layer`` (same parameters) set to ``impl``."""
    copy = deepcopy(layer)
    copy.impl = impl
    return copy


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return 1024 * int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))


def hwhw_estimate(case: dict) -> int:
    positions = case["size"][0] * case["size"][1]
    return HWHW_COPIES * case["batch"] * case["heads"] * positions**2 * 4


def measure(case: dict) -> dict:
    if case["kind"] == "aa-flex" and case["device"] == "cpu":
        return {"oom": "n/a (no flex backward on CPU)"}
    if case["kind"] in ("aa-reference", "botnet"):
        need = hwhw_estimate(case)
        if need > 0.6 * available_bytes(case["device"]):
            return {"oom": f"OOM (needs ~{need / 2**30:.0f} GiB)"}
    command = [sys.executable, __file__, "--cpu-allocator", case["cpu_allocator"], "--case", json.dumps(case)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"oom": "failed: " + proc.stderr.strip().splitlines()[-1][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_rounds(cases: list[dict], rounds: int, run: Callable[[dict], dict] = measure) -> dict[str, dict]:
    """Every case measured ``rounds`` times (``run``: each in its own process), in reverse order every other round so
    that a change in machine load hits every case alike; per case the median time and step memory over the rounds
    (a case that did not run: its first result)."""
    results: dict[str, list[dict]] = {case["kind"]: [] for case in cases}
    for index in range(rounds):
        for case in cases if index % 2 == 0 else cases[::-1]:
            results[case["kind"]].append(run(case))
    return {kind: _median_result(runs) for kind, runs in results.items()}


def _median_result(runs: list[dict]) -> dict:
    if any("oom" in r for r in runs):
        return next(r for r in runs if "oom" in r)
    median = {key: statistics.median(r[key] for r in runs) for key in ("ms", "peak_mib")}
    return {**runs[0], **median}


def repeats_for(size: tuple[int, int]) -> int:
    positions = size[0] * size[1]
    return 8 if positions <= 28 * 28 else 3 if positions <= 64 * 64 else 1


def ratio_columns(kinds: list[str]) -> list[tuple[str, str]]:
    """(ours, peer) pairs: the first aa- kind against every other AA kind and timm peer; aw-auto against conv."""
    pairs = []
    ours = next((k for k in kinds if k.startswith("aa-")), None)
    if ours:
        pairs += [(ours, k) for k in kinds if k != ours and (k.startswith("aa-") or k in PEER_KINDS)]
    if "conv" in kinds:
        pairs += [(k, "conv") for k in kinds if k.startswith("aw-")]
    return pairs


def ratio_cell(ours: dict, peer: dict) -> str:
    """'speed x / memory x' of ``ours`` over ``peer`` (above 1: ours faster / smaller)."""
    if "oom" in ours or "oom" in peer:
        return "-"
    return f"{peer['ms'] / ours['ms']:.2f}x / {peer['peak_mib'] / max(ours['peak_mib'], 1e-3):.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=cli.dims, default=DEFAULT_SIZES, help="HxW feature maps")
    parser.add_argument("--batch", type=cli.positive_int, default=4)
    parser.add_argument("--channels", type=cli.positive_int, default=256, help="in = out channels of every layer")
    parser.add_argument("--heads", type=cli.positive_int, default=8)
    parser.add_argument("--dk", type=cli.positive_int, default=256, help="AA key depth (default: fully attentional)")
    parser.add_argument("--dv", type=cli.positive_int, default=256, help="AA value depth (default: = channels)")
    parser.add_argument("--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=cli.positive_int,
        default=torch.get_num_threads(),
        help="CPU threads; use 1 on a machine shared with other jobs (OpenMP barriers stall under contention)",
    )
    parser.add_argument("--kinds", nargs="+", default=DEFAULT_KINDS, choices=KINDS)
    parser.add_argument(
        "--clock",
        default="wall",
        choices=tuple(CLOCKS),
        help="process: the process's CPU time instead of wall time (CPU, --threads 1, on a shared machine)",
    )
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPES), help="autocast dtype (fp32: none)")
    add_cpu_allocator_option(parser)
    parser.add_argument(
        "--rounds",
        type=cli.positive_int,
        default=1,
        help="measure every case this many times (each in its own process, the order reversed every other round) "
        "and report the medians: for a machine whose load changes",
    )
    parser.add_argument("--backends", action="store_true", help="CUDA: also tabulate the SDPA kernels per size")
    parser.add_argument(
        "--aw-stages", nargs="+", type=cli.dims, metavar="CxS", help="AW per-stage table (see above), then exit"
    )
    parser.add_argument(
        "--aa-maps", nargs="+", type=cli.dims, metavar="HxW", help="AA per-map formulation table, then exit"
    )
    parser.add_argument(
        "--aa-parts", nargs="+", type=cli.dims, metavar="HxW", help="AA and BoTNet part by part per map, then exit"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also print each case's top N ops (torch.profiler, CPU)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_cpu_allocator(args.cpu_allocator)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    torch.set_num_threads(args.threads)
    if args.aw_stages:
        print(interleaved_header(args, "", 7) + "; speed relative to nn.Conv2d")
        print(aw_stage_table(args.aw_stages, args.batch, args.device, args.clock))
        return
    if args.aa_maps:
        channels = f", {args.channels}->{args.channels} ch, {args.heads} heads"
        print(interleaved_header(args, f"{channels}, dk={args.dk}, dv={args.dv}", 5))
        print(aa_map_table(args.aa_maps, args))
        return
    if args.aa_parts:
        channels = f", {args.channels}->{args.channels} ch, {args.heads} heads"
        print(interleaved_header(args, f"{channels}, fully attentional", 7) + "; ms")
        print(aa_parts_table(args.aa_parts, args))
        return

    kinds = list(args.kinds)
    pairs = ratio_columns(kinds)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"# {device_name}, torch {torch.__version__}, timm {timm.__version__}; batch {args.batch}, "
        f"{args.channels}->{args.channels} ch, 3x3, {args.heads} heads, AA dk={args.dk}, dv={args.dv}; {args.dtype}; "
        f"forward+backward, ms (best repeat, {args.clock} clock; median of {args.rounds} alternating rounds) / peak MiB; "
        f"ratios: speed / memory of the first over the second; {args.cpu_allocator} CPU allocator"
    )
    print("| map | " + " | ".join(kinds) + "".join(f" | {a} vs {b}" for a, b in pairs) + " |")
    print("|---" * (len(kinds) + len(pairs) + 1) + "|")
    profiles = []
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        cases = [
            {
                "kind": kind,
                "size": size,
                "batch": args.batch,
                "channels": args.channels,
                "heads": args.heads,
                "dk": args.dk,
                "dv": args.dv,
                "device": args.device,
                "repeats": repeats_for(size),
                "threads": args.threads,
                "dtype": args.dtype,
                "clock": args.clock,
                "profile": args.profile,
                "cpu_allocator": args.cpu_allocator,
            }
            for kind in kinds
        ]
        results = measure_rounds(cases, args.rounds)
        cells = [r.get("oom") or f"{r['ms']:.1f} ms / {r['peak_mib']:.0f} MiB" for r in results.values()]
        cells += [ratio_cell(results[a], results[b]) for a, b in pairs]
        print(f"| {text} | " + " | ".join(cells) + " |", flush=True)
        profiles += [(text, kind, r["profile"]) for kind, r in results.items() if "profile" in r]
    for text, kind, table in profiles:
        print(f"\n## profile: {kind}, {text}, one forward+backward\n\n{table}")
    if args.backends and args.device == "cuda":
        print(backend_table(args))


def backend_table(args: argparse.Namespace) -> str:
    """Which SDPA kernels run the fused path's forward+backward at each size (the math kernel excluded)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from aaconv.layers.relative_attention import attention_fused

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    dtype, head_dim = DTYPES[args.dtype], args.dk // args.heads
    lines = [
        (
            f"\n# SDPA kernels accepting the fused path ({args.dtype}, dk_h={head_dim}; head dim = dk_h + H + W "
            "padded to 8)"
        ),
        "| map | head dim | " + " | ".join(backends) + " |",
        "|---" * (len(backends) + 2) + "|",
    ]
    for text in args.sizes:
        height, width = (int(v) for v in text.split("x"))
        cells = []
        for backend in backends.values():
            q, k = (
                torch.randn(
                    args.batch, args.heads, height * width, head_dim, device="cuda", dtype=dtype, requires_grad=True
                )
                for _ in range(2)
            )
            v = torch.randn(args.batch, args.heads, height * width, args.dv // args.heads, device="cuda", dtype=dtype)
            table = torch.randn(2 * width - 1 + 2 * height - 1, head_dim, device="cuda", dtype=dtype)  # [rW; rH]
            try:
                with sdpa_kernel([backend]):
                    attention_fused(q, k, v, table, height, width).sum().backward()
                cells.append("yes")
            except RuntimeError as e:
                cells.append("no" if "No available kernel" in str(e) else f"error: {str(e)[:40]}")
        padded = -(-(head_dim + height + width) // 8) * 8
        lines.append(f"| {text} | {padded} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
