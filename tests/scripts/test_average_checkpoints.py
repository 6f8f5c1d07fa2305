"""scripts/average_checkpoints.py: the mean of float tensors, integer buffers from the newest, a run's kept
checkpoints by --best / --last, refusals in one line, and an output that eval.py, export.py and backbone.weights
take."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aaconv.engine.checkpoint import load_checkpoint, save_checkpoint
from aaconv.engine.trainer import Trainer
from aaconv.errors import CheckpointError, ConfigError
from aaconv.models.weights_fetch import read_weights
from aaconv.runs import evaluate as eval_py_evaluate
from aaconv.tasks import build_task
from helpers.config import REPO, compose_config
from helpers.processes import ENGINE_TESTS

spec = importlib.util.spec_from_file_location("average_checkpoints", REPO / "scripts" / "average_checkpoints.py")
average = importlib.util.module_from_spec(spec)
spec.loader.exec_module(average)


def small_state(step: int, scale: float) -> dict:
    """A checkpoint of known tensors: a weight, BatchNorm statistics (float32 and float16) and an integer buffer."""
    tensors = {
        "conv.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * scale,
        "bn.running_mean": torch.tensor([0.5, -1.0]) * scale,
        "bn.running_var": torch.tensor([1.0, 2.0], dtype=torch.float16) * scale,
        "bn.num_batches_tracked": torch.tensor(10 * step),
    }
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}
    return {"model": tensors, "ema": ema, "epoch": step, "global_step": step, "config": {"step": step}}


def test_the_average_is_the_hand_computed_mean_with_integer_buffers_from_the_newest(tmp_path: Path, capsys):
    paths = [
        save_checkpoint(small_state(step, scale), tmp_path / f"{step}.pt") for step, scale in [(3, 4), (1, 1), (2, 2)]
    ]
    output = tmp_path / "out" / "averaged.pt"
    average.main([*map(str, paths), "--output", str(output)])
    assert capsys.readouterr().out.strip() == str(output)
    state = load_checkpoint(output)  # weights_only=True
    model = state["model"]
    torch.testing.assert_close(model["conv.weight"], torch.tensor([[7.0, 14.0], [21.0, 28.0]]) / 3)
    torch.testing.assert_close(model["bn.running_mean"], torch.tensor([0.5, -1.0]) * 7 / 3)
    assert model["bn.running_var"].dtype == torch.float16
    torch.testing.assert_close(model["bn.running_var"], torch.tensor([7 / 3, 14 / 3], dtype=torch.float16))
    assert model["bn.num_batches_tracked"].item() == 30  # the newest's (step 3), not the mean 20
    torch.testing.assert_close(state["ema"]["conv.weight"], model["conv.weight"] + 1)
    assert (state["config"], state["epoch"], state["global_step"]) == ({"step": 3}, 3, 3)
    assert state["averaged_from"] == [str(tmp_path / f"{s}.pt") for s in (1, 2, 3)]  # oldest first

    newest_two = average.average_checkpoints(paths, last=2)
    torch.testing.assert_close(newest_two["model"]["conv.weight"], torch.tensor([[3.0, 6.0], [9.0, 12.0]]))


def test_other_models_and_bad_selections_are_refused_in_one_line(tmp_path: Path):
    first = save_checkpoint(small_state(1, 1), tmp_path / "a.pt")
    other = small_state(2, 1)
    other["model"]["conv.weight"] = torch.zeros(3, 2)
    shaped = save_checkpoint(other, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"b.pt holds another model than .*a.pt: conv.weight is \(3, 2\) there"):
        average.average_checkpoints([first, shaped])
    del other["model"]["conv.weight"]
    keyed = save_checkpoint(other, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c.pt holds another model than .*: 1 keys are in one only \(e.g. conv"):
        average.average_checkpoints([first, keyed])
    with pytest.raises(ConfigError, match="--best ranks the checkpoints of a run directory; .*a.pt is a file"):
        average.input_files([first], best=2)
    with pytest.raises(CheckpointError, match="--last 3: only 1 checkpoints given"):
        average.average_checkpoints([first], last=3)
    no_ema = small_state(3, 1)
    del no_ema["ema"]
    mixed = average.average_checkpoints([first, save_checkpoint(no_ema, tmp_path / "d.pt")])
    assert "ema" not in mixed and "model" in mixed  # EMA averaged only when every input has it


def test_a_run_directory_gives_its_kept_checkpoints(toy_config, tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(ENGINE_TESTS))  # the toy task
    run_dir = tmp_path / "run"
    cfg = toy_config("trainer.epochs=4", "trainer.keep_best=3", "+task.accuracies=[50,80,60,70]")
    Trainer(cfg, build_task(cfg), run_dir).fit()
    best_two = average.average_checkpoints(average.input_files([run_dir], best=2))
    assert best_two["averaged_from"] == [str(run_dir / "best-2.pt"), str(run_dir / "best-4.pt")]
    newest_two = average.average_checkpoints(average.input_files([run_dir], best=None), last=2)
    assert newest_two["averaged_from"] == [str(run_dir / "best-3.pt"), str(run_dir / "best-4.pt")]
    with pytest.raises(CheckpointError, match="--best 4: run directory .* keeps 3 checkpoints"):
        average.input_files([run_dir], best=4)
    output = save_checkpoint(best_two, tmp_path / "averaged.pt")
    with pytest.raises(CheckpointError, match="holds weights only .*, no training state to resume"):
        Trainer(toy_config(f"trainer.resume={output}"), build_task(cfg), tmp_path / "resumed").fit()


def test_eval_export_and_backbone_weights_take_the_average(tiny_config, tmp_path: Path):
    cfg = tiny_config()
    config = OmegaConf.to_container(cfg, resolve=True)
    paths = []
    for step in (1, 2):
        torch.manual_seed(step)
        weights = build_task(cfg).build_model().state_dict()
        state = {"model": weights, "ema": weights, "epoch": step, "global_step": step, "config": config}
        paths.append(save_checkpoint(state, tmp_path / f"best-{step}.pt"))
    output = tmp_path / "averaged.pt"
    average.main([*map(str, paths), "--output", str(output)])
    averaged = load_checkpoint(output)["model"]

    eval_cfg = compose_config(f"checkpoint='{output}'", "device=cpu", config_name="eval")
    results = eval_py_evaluate(eval_cfg, load_checkpoint(output), torch.device("cpu"), tmp_path / "eval")
    assert results["weights"] == "ema" and results["val_images"] == 60 and results["epochs"] == 2
    assert torch.equal(read_weights(output)["conv1.weight"], averaged["conv1.weight"])  # backbone.weights' reader
    export_spec = importlib.util.spec_from_file_location("export_script", REPO / "scripts" / "export.py")
    export_script = importlib.util.module_from_spec(export_spec)
    export_spec.loader.exec_module(export_script)
    exported, _ = export_script.export(output, tmp_path / "export")
    assert torch.equal(read_weights(exported)["conv1.weight"], averaged["conv1.weight"])
