"""Time and peak memory of one forward+backward of the attention layers.

AAConv2d's reference / fused / flex paths (arXiv 1904.09925) across feature-map sizes, AWConv2d's grouped /
unfold / bmm formulations (arXiv 2108.08205) and a plain nn.Conv2d of the same shape::

    python scripts/bench_layers.py                      # the full table (several minutes on 2 CPU cores)
    python scripts/bench_layers.py --sizes 14x14 28x28  # a subset
    python scripts/bench_layers.py --dtype bf16 --backends   # CUDA: under autocast, plus which SDPA kernels
                                                             # accept the fused path at each size
    python scripts/bench_layers.py --aw-stages 64x40 128x20 256x10 512x5 --batch 8   # AW per ResNet-50 stage

``--aw-stages CxS ...`` times AWConv2d's formulations against a plain conv of each shape (C channels in and out,
S x S map, stride 1) in one process, interleaved over rounds (so machine load hits all alike), and prints the
median round's speed relative to the conv: the per-layer table behind AW's ``impl="auto"`` rule.

Each case runs in a fresh subprocess so allocator state cannot leak between cases. Peak memory:

- CPU: the process's resident-set high-water mark (VmHWM) is reset through /proc/self/clear_refs right
  before the first forward and read after the last backward; the table shows its growth over the
  resident size at that moment, i.e. everything the forward+backward allocated at its peak
  (activations kept for backward, temporaries, gradients). Linux only.
- CUDA: torch.cuda.max_memory_allocated() growth over the allocated memory before the first forward.

The reference path's (B, N_h, HW, HW) tensors are estimated first; a case whose estimate exceeds the
memory available is not run and reported as out of memory.
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
from pathlib import Path

import torch
from torch import nn

from aaconv.layers import AAConv2d, AWConv2d
from aaconv.utils import cli

DEFAULT_SIZES = ("14x14", "28x28", "56x56", "64x64", "100x168")
KINDS = ("aa-reference", "aa-fused", "aa-flex", "aw-grouped", "aw-unfold", "aw-auto", "conv")
AW_KINDS = ("grouped", "unfold", "auto")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# logits, their relative part, softmax output and their gradients live at once in the reference backward
REFERENCE_HWHW_COPIES = 6


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def build(case: dict) -> nn.Module:
    channels, kind = case["channels"], case["kind"]
    if kind.startswith("aa-"):
        return AAConv2d(channels, channels, 3, dk=case["dk"], dv=case["dv"], num_heads=case["heads"], impl=kind[3:])
    if kind.startswith("aw-"):
        return AWConv2d(channels, channels, 3, impl=kind[3:])
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
    with autocast:
        layer(torch.randn(1, case["channels"], 8, 8, device=device)).sum().backward()  # load kernels, pools
        if case["kind"] == "aa-flex":  # compiles the flex kernel for this shape
            layer(x).sum().backward()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start_kb = _status_kb("VmRSS")
    for _ in range(case["repeats"]):
        begin = time.perf_counter()
        with autocast:
            out = layer(x)
        out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - start_bytes) / 2**20
    else:
        peak_mib = (_status_kb("VmHWM") - start_kb) / 2**10
    timed = times[1:] if len(times) > 1 else times  # the first call pays one-time setup
    return {"ms": 1000 * min(timed), "peak_mib": peak_mib}


def aw_stage_table(stages: list[str], batch: int, device: str, rounds: int = 7) -> str:
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
        times: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(rounds + 1):  # the first round warms up
            for name, layer in layers.items():
                begin = time.perf_counter()
                layer(x).sum().backward()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - begin)
        median = {name: statistics.median(t[1:]) for name, t in times.items()}
        cells = [f"{median['conv'] / median[k]:.2f}x" for k in AW_KINDS]
        picked = layers["auto"].resolve_impl((size, size))
        lines.append(
            f"| {channels}, {size}x{size} | {1000 * median['conv']:.1f} | " + " | ".join(cells) + f" | {picked} |"
        )
    return "\n".join(lines)


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return 1024 * int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))


def reference_estimate(case: dict) -> int:
    positions = case["size"][0] * case["size"][1]
    return REFERENCE_HWHW_COPIES * case["batch"] * case["heads"] * positions**2 * 4


def measure(case: dict) -> dict:
    if case["kind"] == "aa-flex" and case["device"] == "cpu":
        return {"oom": "n/a (no flex backward on CPU)"}
    if case["kind"] == "aa-reference":
        need = reference_estimate(case)
        if need > 0.6 * available_bytes(case["device"]):
            return {"oom": f"OOM (needs ~{need / 2**30:.0f} GiB)"}
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"oom": "failed: " + proc.stderr.strip().splitlines()[-1][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def repeats_for(size: tuple[int, int]) -> int:
    positions = size[0] * size[1]
    return 8 if positions <= 28 * 28 else 3 if positions <= 64 * 64 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=cli.dims, default=DEFAULT_SIZES, help="HxW feature maps")
    parser.add_argument("--batch", type=cli.positive_int, default=2)
    parser.add_argument("--channels", type=cli.positive_int, default=128, help="in = out channels of every layer")
    parser.add_argument("--heads", type=cli.positive_int, default=8)
    parser.add_argument("--dk", type=cli.positive_int, default=24, help="default: kappa=0.2 of 128, rounded to 8 heads")
    parser.add_argument(
        "--dv", type=cli.positive_int, default=16, help="default: upsilon=0.1 of 128, rounded to 8 heads"
    )
    parser.add_argument("--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=cli.positive_int,
        default=torch.get_num_threads(),
        help="CPU threads; use 1 on a machine shared with other jobs (OpenMP barriers stall under contention)",
    )
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPES), help="autocast dtype (fp32: none)")
    parser.add_argument("--backends", action="store_true", help="CUDA: also tabulate the SDPA kernels per size")
    parser.add_argument(
        "--aw-stages", nargs="+", type=cli.dims, metavar="CxS", help="AW per-stage table (see above), then exit"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.aw_stages:
        torch.set_num_threads(args.threads)
        print(
            f"# {args.device}, {args.threads} threads, torch {torch.__version__}; batch {args.batch}; "
            "forward+backward, median of 7 interleaved rounds; speed relative to nn.Conv2d"
        )
        print(aw_stage_table(args.aw_stages, args.batch, args.device))
        return

    kinds = args.kinds
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"# {device_name}, torch {torch.__version__}; batch {args.batch}, {args.channels}->{args.channels} ch, "
        f"3x3, AA: {args.heads} heads, dk={args.dk}, dv={args.dv}; {args.dtype}; forward+backward, "
        "ms (best repeat) / peak MiB"
    )
    print("| map | " + " | ".join(kinds) + " | AA mem ratio ref/fused | AA speed-up |")
    print("|---" * (len(kinds) + 3) + "|")
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        results = {}
        for kind in kinds:
            case = {
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
            }
            results[kind] = measure(case)
        cells = [r.get("oom") or f"{r['ms']:.1f} ms / {r['peak_mib']:.0f} MiB" for r in results.values()]
        ref, fused = results.get("aa-reference", {"oom": "-"}), results.get("aa-fused", {"oom": "-"})
        ratio = speed = "-"
        if "oom" not in ref and "oom" not in fused:
            ratio = f"{ref['peak_mib'] / max(fused['peak_mib'], 1e-3):.1f}x"
            speed = f"{ref['ms'] / fused['ms']:.2f}x"
        print(f"| {text} | " + " | ".join(cells) + f" | {ratio} | {speed} |", flush=True)
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
            rel_w = torch.randn(2 * width - 1, head_dim, device="cuda", dtype=dtype)
            rel_h = torch.randn(2 * height - 1, head_dim, device="cuda", dtype=dtype)
            try:
                with sdpa_kernel([backend]):
                    attention_fused(q, k, v, rel_w, rel_h, height, width).sum().backward()
                cells.append("yes")
            except RuntimeError as e:
                cells.append("no" if "No available kernel" in str(e) else f"error: {str(e)[:40]}")
        padded = -(-(head_dim + height + width) // 8) * 8
        lines.append(f"| {text} | {padded} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
