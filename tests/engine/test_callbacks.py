"""Trainer callbacks: a user's class added by config runs at its events in the documented order, without touching
the trainer; a checkpoint of such a run still evaluates and never instantiates it; constructing a trainer has no
side effect on the run directory or the process group."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from aaconv.engine.callbacks import EVENTS
from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError
from aaconv.runs import evaluate, rebuild_run
from aaconv.tasks import build_task
from helpers.config import compose_config

PROBE = '''
import json
from pathlib import Path

from aaconv.engine.callbacks import Callback

INSTANCES = []


class Probe(Callback):
    """Records each event with what it was given, and writes it to <run dir>/probe.jsonl."""

    def __init__(self, tag: str = "probe"):
        self.tag = tag
        self.events = []
        INSTANCES.append(self)

    def note(self, trainer, event, **facts):
        self.events.append({"event": event, "step": trainer.global_step, "epoch": trainer.epoch, **facts})

    def on_fit_start(self, trainer):
        self.note(trainer, "on_fit_start", lock=(trainer.run_dir / ".lock").exists())

    def on_epoch_start(self, trainer):
        self.note(trainer, "on_epoch_start")

    def on_step_end(self, trainer, loss):
        self.note(trainer, "on_step_end", loss=float(loss))

    def on_checkpoint(self, trainer, names):
        self.note(trainer, "on_checkpoint", names=list(names), on_disk=all((trainer.run_dir / n).is_file() for n in names))

    def on_eval_end(self, trainer, metrics):
        self.note(trainer, "on_eval_end", metrics=sorted(metrics))

    def on_epoch_end(self, trainer, record):
        lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
        self.note(trainer, "on_epoch_end", record_epoch=record["epoch"], logged=json.loads(lines[-1]) == record)

    def on_fit_end(self, trainer, results):
        self.note(trainer, "on_fit_end", results_json=(trainer.run_dir / "results.json").is_file())

    def on_close(self, trainer):
        self.note(trainer, "on_close")
        (trainer.run_dir / f"{self.tag}.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in self.events))
'''


@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch) -> str:
    """A callback module of the user's own, importable as `user_probe` (not part of aaconv)."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "user_probe.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "user_probe", raising=False)  # a fresh INSTANCES list per test
    return "user_probe"


def events(run_dir: Path, tag: str = "probe") -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"{tag}.jsonl").read_text().splitlines()]


def test_a_callback_added_by_config_runs_at_its_events_in_order(toy_config, probe_module: str, tmp_path: Path):
    run_dir = tmp_path / "run"
    cfg = toy_config(
        f"+callbacks.probe._target_={probe_module}.Probe",
        f"+callbacks.second._target_={probe_module}.Probe",
        "+callbacks.second.tag=second",
        "trainer.epochs=2",
        "trainer.checkpoint_every_steps=3",
    )
    trainer = Trainer(cfg, build_task(cfg), run_dir)
    first, second = importlib.import_module(probe_module).INSTANCES
    assert (first.tag, second.tag) == ("probe", "second")  # in the order of the mapping
    results = trainer.fit()

    seen = events(run_dir)
    assert [e["event"] for e in seen] == [e["event"] for e in events(run_dir, "second")]
    assert [e["event"] for e in seen if e["event"] != "on_step_end" and e["event"] != "on_checkpoint"] == [
        "on_fit_start",
        "on_epoch_start",
        "on_eval_end",
        "on_epoch_end",
        "on_epoch_start",
        "on_eval_end",
        "on_epoch_end",
        "on_fit_end",
        "on_close",
    ]
    assert seen[0]["lock"] is True  # the run directory is held from on_fit_start on
    steps = [e["step"] for e in seen if e["event"] == "on_step_end"]
    assert steps == list(range(1, 17)) and all(e["loss"] > 0 for e in seen if e["event"] == "on_step_end")
    checkpoints = [(e["step"], e["names"]) for e in seen if e["event"] == "on_checkpoint"]
    assert (3, ["last.pt"]) in checkpoints and (8, ["best.pt", "last.pt"]) in checkpoints
    assert all(e["on_disk"] for e in seen if e["event"] == "on_checkpoint")
    # the step checkpoint comes before the callbacks' on_step_end; the epoch's checkpoints before on_epoch_end
    assert [e["event"] for e in seen if e["step"] == 3][-2:] == ["on_checkpoint", "on_step_end"]
    epoch_ends = [e for e in seen if e["event"] == "on_epoch_end"]
    assert [(e["record_epoch"], e["epoch"], e["logged"]) for e in epoch_ends] == [(1, 1, True), (2, 2, True)]
    assert [seen[seen.index(e) - 1]["event"] for e in epoch_ends] == ["on_checkpoint", "on_checkpoint"]
    assert all("accuracy" in e["metrics"] for e in seen if e["event"] == "on_eval_end")
    assert seen[-2]["results_json"] is True and results["steps"] == 16
    assert set(e["event"] for e in seen) == set(EVENTS)


def test_a_checkpoint_with_a_user_callback_evaluates_without_instantiating_it(
    tiny_config, probe_module: str, tmp_path: Path, monkeypatch
):
    cfg = tiny_config(
        f"+callbacks.probe._target_={probe_module}.Probe", "trainer.max_steps=1", "trainer.max_eval_batches=1"
    )
    Trainer(cfg, build_task(cfg), tmp_path).fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["config"]["callbacks"] == {"probe": {"_target_": f"{probe_module}.Probe"}}  # stored as the run had it

    instances = importlib.import_module(probe_module).INSTANCES
    built = len(instances)
    eval_cfg = compose_config(f"checkpoint={tmp_path / 'last.pt'}", config_name="eval")
    results = evaluate(eval_cfg, state, torch.device("cpu"), tmp_path / "eval")  # eval.py's evaluation
    assert results["top1"] >= 0 and results["checkpoint"] == str(tmp_path / "last.pt")
    assert len(instances) == built  # the stored callback was never built
    assert "callbacks" not in rebuild_run(tmp_path / "last.pt").config

    # a tampered checkpoint naming any target under callbacks is dropped unread, never called
    state["config"]["callbacks"] = {"evil": {"_target_": "os.system", "_args_": ["false"]}}
    monkeypatch.setattr("os.system", lambda *_: pytest.fail("instantiated from a checkpoint"))
    assert "callbacks" not in rebuild_run(tmp_path / "last.pt", state=state).config


def test_constructing_a_trainer_touches_neither_the_run_directory_nor_the_process_group(
    toy_config, tmp_path: Path, monkeypatch
):
    joined = []
    monkeypatch.setattr("aaconv.engine.trainer.init_distributed", lambda *a, **k: joined.append(a))
    cfg = toy_config()
    Trainer(cfg, build_task(cfg), tmp_path / "run")
    assert not (tmp_path / "run").exists() and joined == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("+callbacks.probe.every=3", "callbacks.probe needs a _target_"),
        ("+callbacks.probe._target_=no_such_module.Probe", "callbacks.probe: cannot instantiate no_such_module.Probe"),
        ("+callbacks.probe._target_=collections.OrderedDict", "is not a subclass of aaconv.engine.callbacks.Callback"),
    ],
)
def test_a_callback_that_cannot_be_built_is_one_config_error(toy_config, tmp_path: Path, entry: str, message: str):
    cfg = toy_config(entry)
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, build_task(cfg), tmp_path)
