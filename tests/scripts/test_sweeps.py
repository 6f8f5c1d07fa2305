"""An Optuna search (hydra/sweeper=lr_wd_ls) on the built-in data, and its summary by scripts/paper_table.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_paper_table import TINY, run

from helpers.config import CONFIGS, REPO

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")


@pytest.mark.slow
def test_optuna_search_trains_its_trials_and_reports_the_best(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    searched = run(
        str(REPO / "train.py"),
        "-m",
        "experiment=mini_relations",
        "hydra/sweeper=lr_wd_ls",
        "hydra.sweeper.n_trials=2",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        env={"AACONV_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"},
    )
    assert searched.returncode == 0, searched.stderr[-3000:]
    trials = [
        (json.loads(p.read_text()), OmegaConf.load(p.parent / ".hydra" / "overrides.yaml"))
        for p in sorted(sweep_dir.rglob("results.json"))
    ]
    assert len(trials) == 2
    space = OmegaConf.load(CONFIGS / "hydra" / "sweeper" / "lr_wd_ls.yaml").hydra.sweeper.params
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert set(best.best_params) == set(space) == {"optim.lr", "optim.weight_decay", "task.label_smoothing"}
    assert best.best_value == max(results["top1"] for results, _ in trials)
    for results, overrides in trials:  # each trial trained with the values it was given
        config = OmegaConf.load(Path(results["checkpoint"]).parent / "config.yaml")
        given = dict(o.split("=", 1) for o in overrides)
        assert config.optim.lr == float(given["optim.lr"]) and f"{given['optim.lr']}" in space["optim.lr"]
        assert config.task.label_smoothing == float(given["task.label_smoothing"])

    summary = run(str(REPO / "scripts" / "paper_table.py"), "--sweep", str(sweep_dir), cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr[-3000:]
    ranked = [line.split(" | ") for line in summary.stdout.splitlines()[2:]]
    assert len(ranked) == 2 and float(ranked[0][1]) == best.best_value
