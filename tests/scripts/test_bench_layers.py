"""scripts/bench_layers.py at a tiny size: every layer kind builds and runs, timm's peers at our channels and heads,
the ratio columns (timings themselves are not asserted)."""

import argparse
import importlib.util
import sys

import pytest

from helpers.config import REPO

spec = importlib.util.spec_from_file_location("bench_layers", REPO / "scripts" / "bench_layers.py")
bench_layers = sys.modules["bench_layers"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_layers)


def test_halo_block_is_the_largest_side_up_to_8_dividing_both():
    assert [bench_layers.halo_block(s) for s in [(14, 14), (28, 28), (56, 56), (100, 168)]] == [7, 7, 8, 4]


@pytest.mark.parametrize("kind", [k for k in bench_layers.KINDS if k != "aa-flex"])  # flex: no CPU backward
def test_every_kind_runs_forward_backward_at_equal_channels_and_heads(kind):
    case = {"kind": kind, "size": [6, 4], "batch": 2, "channels": 16, "heads": 2, "dk": 16, "dv": 16}
    case.update(device="cpu", repeats=1, threads=1, dtype="fp32", clock="process", profile=2)
    layer = bench_layers.build(case)
    if kind in bench_layers.PEER_KINDS:
        assert layer.num_heads == 2
    result = bench_layers.run_case(case)
    assert result["ms"] > 0 and result["peak_mib"] >= 0 and result["profile"].count("\n") == 3  # header + 2 ops


def test_ratio_columns_put_the_first_aa_kind_against_the_peers_and_aw_against_conv():
    kinds = ["aa-auto", "aa-reference", "botnet", "lambda", "aw-auto", "conv"]
    assert bench_layers.ratio_columns(kinds) == [
        ("aa-auto", "aa-reference"),
        ("aa-auto", "botnet"),
        ("aa-auto", "lambda"),
        ("aw-auto", "conv"),
    ]
    ours, peer = {"ms": 2.0, "peak_mib": 10.0}, {"ms": 5.0, "peak_mib": 95.0}
    assert bench_layers.ratio_cell(ours, peer) == "2.50x / 9.5x"
    assert bench_layers.ratio_cell({"oom": "OOM (needs ~54 GiB)"}, peer) == "-"


def test_rounds_alternate_the_order_and_report_medians():
    order = []
    times = {"aa-auto": iter([30.0, 10.0, 20.0]), "botnet": iter([5.0, 7.0, 6.0])}

    def run(case):
        order.append(case["kind"])
        if case["kind"] == "halonet":
            return {"oom": "OOM (needs ~9 GiB)"}
        return {"ms": next(times[case["kind"]]), "peak_mib": 4.0}

    cases = [{"kind": "aa-auto"}, {"kind": "botnet"}, {"kind": "halonet"}]
    results = bench_layers.measure_rounds(cases, 3, run)
    assert order == ["aa-auto", "botnet", "halonet", "halonet", "botnet", "aa-auto", "aa-auto", "botnet", "halonet"]
    assert results["aa-auto"] == {"ms": 20.0, "peak_mib": 4.0} and results["botnet"]["ms"] == 6.0
    assert results["halonet"] == {"oom": "OOM (needs ~9 GiB)"}


def test_parts_table_times_each_part_and_divides_its_own_columns(monkeypatch):
    """Each part is timed on its own input (the cores on a qkv-shaped map), and the ratios are the table's columns."""
    seen = {}

    def fake_medians(layers, inputs, rounds, clock):
        seen.update({name: tuple(inputs[name].shape) for name in layers})
        return {"aa": 0.004, "botnet": 0.003, "aa core": 0.002, "botnet core": 0.0025, "W_O": 0.001}

    monkeypatch.setattr(bench_layers, "interleaved_medians", fake_medians)
    args = argparse.Namespace(channels=16, heads=2, batch=2, device="cpu", clock="process")
    table = bench_layers.aa_parts_table(["5x3"], args)
    assert table.splitlines()[-1] == "| 5x3 | 4.00 | 3.00 | 0.75x | 2.00 | 2.50 | 1.25x | 1.00 |"
    assert seen == {
        "aa": (2, 16, 5, 3),
        "botnet": (2, 16, 5, 3),
        "aa core": (2, 48, 5, 3),
        "botnet core": (2, 48, 5, 3),
        "W_O": (2, 16, 5, 3),
    }


def test_parts_table_runs_the_real_layers():
    args = argparse.Namespace(channels=16, heads=2, batch=1, device="cpu", clock="process")
    [row] = bench_layers.aa_parts_table(["4x4"], args).splitlines()[2:]
    assert row.startswith("| 4x4 | ") and row.count("|") == 9
