"""scripts/paper_table.py on folders made by real (tiny) training runs: rows, statistics, JSON schema, sweeps."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from helpers.config import REPO

TINY = [
    "data.generate.train_per_class=8",
    "data.generate.val_per_class=4",
    "data.batch_size=8",
    "trainer.epochs=1",
    "logger.progress_bar=false",
]


def start(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """A script started in a subprocess; its caches (datasets, model sizes) in `cwd` unless `env` says otherwise."""
    env = {"AACONV_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A script run in a subprocess (see `start`)."""
    return finish(start(*args, cwd=cwd, env=env))


@pytest.fixture
def paper_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """scripts/paper_table.py imported in-process, with scripts/ importable as when it runs (--plot imports
    paper_plot from beside it); the tests below that are not about the process boundary call its main()."""
    spec = importlib.util.spec_from_file_location("paper_table", REPO / "scripts" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_table", module)  # its dataclasses look their module up there
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    had_paper_plot = "paper_plot" in sys.modules
    spec.loader.exec_module(module)
    yield module
    if not had_paper_plot:
        sys.modules.pop("paper_plot", None)


def show(
    paper_table: ModuleType, cache: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    """paper_table.main(argv) in-process with its model-size cache in `cache`, as run() gives a subprocess in `cwd`:
    (exit status, stdout, stderr)."""
    monkeypatch.setenv("AACONV_CACHE", str(cache))
    capsys.readouterr()
    try:
        paper_table.main(list(argv))
        status = 0
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """outputs/: a two-seed multirun of the mini row 'none' and a single run of the row 'se', side by side (one
    thread each; the shared dataset cache is safe to fill from two processes)."""
    root = tmp_path_factory.mktemp("runs")
    env = {"AACONV_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    sweep = start(
        str(REPO / "train.py"),
        "-m",
        "experiment=mini_relations",
        "attention=none",
        "seed=0,1",
        *TINY,
        f"hydra.sweep.dir={root / 'outputs' / 'sweep'}",
        cwd=root,
        env=env,
    )
    single = start(
        str(REPO / "train.py"),
        "experiment=mini_relations",
        "attention=se",
        *TINY,
        f"hydra.run.dir={root / 'outputs' / 'single'}",
        cwd=root,
        env=env,
    )
    for process in (finish(sweep), finish(single)):
        assert process.returncode == 0, process.stderr[-3000:]
    return root / "outputs"


def results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


@pytest.mark.slow
def test_json_rows_carry_paper_ours_and_run_statistics(runs: Path) -> None:
    shown = run(str(REPO / "scripts" / "paper_table.py"), str(runs), "--table", "mini", "--format", "json", cwd=runs)
    assert shown.returncode == 0, shown.stderr[-3000:]
    rows = {o["row"]: o for o in json.loads(shown.stdout)}
    assert all(set(o) == {"table", "row", "experiment", "paper", "ours"} for o in rows.values())
    seeds = [r["top1"] for r in results(runs / "sweep")]
    none = rows["ResNet-18 none"]["ours"]
    assert none["runs"] == 2 and none["epochs"] == [1]
    assert none["top1"] == pytest.approx(statistics.fmean(seeds), abs=0.01)
    assert none["top1_std"] == pytest.approx(statistics.stdev(seeds), abs=0.01)
    se = rows["ResNet-18 se"]["ours"]
    assert se["runs"] == 1 and se["top1"] == pytest.approx(results(runs / "single")[0]["top1"], abs=0.01)
    assert se["params_m"] == pytest.approx(results(runs / "single")[0]["params"] / 1e6, abs=0.005)
    assert rows["ResNet-18 aa"]["ours"]["runs"] == 0 and "top1" not in rows["ResNet-18 aa"]["ours"]


@pytest.mark.slow
def test_markdown_says_which_rows_have_no_run_and_gives_each_rows_command(
    runs: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = show(
        paper_table, runs / "cache", capsys, monkeypatch, str(runs), "--table", "mini", "--table", "CIFAR"
    )
    assert status == 0, err[-3000:]
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "(2 runs)" in lines["ResNet-18 none"] and "no run" in lines["ResNet-18 aw"]
    assert "36.3 / 36.54" in lines["WRN-28-10"] and "| 80.3 | no run |" in lines["WRN-28-10"]
    assert "`python train.py experiment=paper/cifar100_wrn28_10_none data.root=" in lines["WRN-28-10"]
    assert "| 10.9 / 10.8 | 32x32 |" in lines["AA-WRN-28-10"]  # GFLOPs: the paper's beside ours, at the row's input
    assert "| - / 10.49 | 32x32 |" in lines["WRN-28-10"] and "CIFAR-100 table [2nd]" in lines["WRN-28-10"]


@pytest.mark.slow
def test_sweep_summary_is_sorted_by_the_metric_with_each_jobs_overrides(
    runs: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = show(paper_table, runs / "cache", capsys, monkeypatch, "--sweep", str(runs / "sweep"))
    assert status == 0, err[-3000:]
    jobs = [line.split(" | ") for line in out.splitlines()[2:]]
    assert len(jobs) == 2
    assert float(jobs[0][1]) >= float(jobs[1][1])
    assert sorted(next(w for w in job[3].split() if w.startswith("seed=")) for job in jobs) == ["seed=0", "seed=1"]
    assert all("experiment=mini_relations" in job[3] for job in jobs)


def test_a_folder_without_runs_is_one_line_not_an_empty_table(
    runs: Path, tmp_path: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes").mkdir()
    cases = {
        ("--no-count", str(tmp_path / "missing")): "run folder .*missing does not exist",
        ("--no-count", str(runs), str(tmp_path / "notes")): "no finished runs .* under .*notes",
        ("--sweep", str(tmp_path / "notes")): "no finished jobs .* under .*notes",
    }
    for args, message in cases.items():
        status, out, err = show(paper_table, tmp_path / "cache", capsys, monkeypatch, *args)
        assert status == 2 and out == "", out[-2000:]
        assert len(err.strip().splitlines()) == 1 and re.match(f"error: {message}", err)


def write_run(folder: Path, top1: float, **facts: object) -> None:
    """A run folder of the mini row 'ResNet-18 none' as far as paper_table.py reads one: results.json and
    the Hydra record's choices."""
    choices = {"experiment": "mini_relations", "backbone": "resnet18", "attention": "none"}
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))
    (folder / "results.json").write_text(json.dumps({"top1": top1, "epochs": 6, **facts}))


def test_runs_cut_short_are_left_out_of_ours_and_named(
    tmp_path: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = {"stopped_by": "epochs", "epochs_trained": 6.0, "eval_partial": False}
    write_run(tmp_path / "whole", 50.0, **whole)
    write_run(tmp_path / "before_these_keys", 60.0)  # a results.json from before stopped_by: a whole run
    write_run(tmp_path / "smoke", 0.0, stopped_by="max_steps", epochs_trained=0.01, eval_partial=True)
    write_run(tmp_path / "short_eval", 10.0, **{**whole, "eval_partial": True})
    args = ("--no-count", str(tmp_path), "--table", "mini")

    status, out, err = show(paper_table, tmp_path / "cache", capsys, monkeypatch, *args, "--format", "json")
    assert status == 0, err[-3000:]
    ours = next(o["ours"] for o in json.loads(out) if o["row"] == "ResNet-18 none")
    assert (ours["runs"], ours["left_out"], ours["top1"]) == (2, 2, 55.0)
    assert err.strip().splitlines() == [
        "note: 2 of 4 runs left out of ours as cut short (2 evaluated on part of the validation split "
        "(trainer.max_eval_batches); 1 stopped by trainer.max_steps); --include-short counts them"
    ]

    status, out, err = show(paper_table, tmp_path / "cache", capsys, monkeypatch, *args, "--include-short")
    assert status == 0, err[-3000:]
    assert "| 30 ± 29.44 (4 runs, 2 cut short) |" in out
    assert err.startswith("note: 2 of 4 runs are cut short (")


def test_plot_needs_matplotlib_or_writes_the_figure(
    tmp_path: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--no-count", "--table", "ImageNet ResNet", "--plot", str(tmp_path / "fig1.png"))
    status, _, err = show(paper_table, tmp_path / "cache", capsys, monkeypatch, *args)
    if importlib.util.find_spec("matplotlib") is None:
        assert status != 0 and "--plot needs matplotlib" in err
    else:
        assert status == 0 and (tmp_path / "fig1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_model_sizes_are_cached_per_source_digest(
    tmp_path: Path, paper_table: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rows(*extra: str) -> list[dict]:
        status, out, err = show(paper_table, tmp_path / "cache", capsys, monkeypatch, *args, *extra)
        assert status == 0, err[-3000:]
        return json.loads(out)

    args = ("--table", "mini", "--format", "json")
    first = rows()
    [cache] = (tmp_path / "cache" / "paper_table").glob("sizes-*.json")
    sizes = json.loads(cache.read_text())
    assert sizes["mini_relations attention=aa"]["params_m"] == first[2]["ours"]["params_m"]
    sizes["mini_relations attention=aa"]["params_m"] = 1234.0  # read back, not recounted
    cache.write_text(json.dumps(sizes))
    assert rows()[2]["ours"]["params_m"] == 1234.0
    recounted = rows("--no-cache")
    assert recounted[2]["ours"]["params_m"] == first[2]["ours"]["params_m"]


def test_runs_trained_with_ema_count_the_ema_metric(tmp_path: Path, paper_table: ModuleType) -> None:
    """A results.json that names its weights holds the EMA's top1 as `top1`; an older one of an EMA run holds it
    as `ema_top1` (its `top1`: the model's)."""
    write_run(tmp_path / "ema", 60.0, model_top1=50.0, weights="ema")
    write_run(tmp_path / "older_ema", 50.0, ema_top1=70.0)
    write_run(tmp_path / "model", 80.0, weights="model")
    row = next(r for r in paper_table.ROWS if r.row == "ResNet-18 none")
    ours = paper_table.our_metrics(row, paper_table.find_runs([tmp_path]))
    assert (ours["runs"], ours["top1"], ours["weights"]) == (3, 70.0, ["ema", "model"])
    swept = paper_table.sweep_table(tmp_path)
    assert [line.split(" | ")[1] for line in swept.splitlines()[2:]] == ["80", "70", "60"]
