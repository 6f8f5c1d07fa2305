"""The trainer in-process on the toy MLP task: accumulation, determinism, NaN guard, precision, EMA, checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.precision import NonFiniteLossError
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError
from aaconv.tasks import build_task

CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "batch_in_epoch",
    "global_step",
    "best_metric",
    "best_metric_name",
    "best_checkpoints",
    "nonfinite_skipped",
    "train_time_s",
    "train_images_per_s",
    "world_size",
    "rng",
    "config",
}


def fit(cfg, run_dir: Path) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg, build_task(cfg), run_dir)
    return trainer, trainer.fit()


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_accumulating_k_batches_equals_one_k_times_larger_batch(toy_config, tmp_path: Path):
    big, _ = fit(toy_config("data.batch_size=16", "trainer.accum_steps=1", "+task.train_size=64"), tmp_path / "a")
    accum, results = fit(
        toy_config("data.batch_size=4", "trainer.accum_steps=4", "+task.train_size=64"), tmp_path / "b"
    )
    assert results["global_batch"] == 16
    assert accum.global_step == big.global_step == 4
    for key, value in weights(big).items():
        torch.testing.assert_close(weights(accum)[key], value, rtol=1e-5, atol=1e-6)


def test_deterministic_runs_are_bit_identical(toy_config, tmp_path: Path):
    overrides = ("trainer.deterministic=true", "+task.dropout=0.3", "trainer.epochs=2")
    first, _ = fit(toy_config(*overrides), tmp_path / "a")
    second, _ = fit(toy_config(*overrides), tmp_path / "b")
    assert all(torch.equal(weights(first)[k], v) for k, v in weights(second).items())


def test_checkpoint_loads_weights_only_with_plain_keys_and_ema(toy_config, tmp_path: Path):
    trainer, results = fit(
        toy_config(
            "trainer.ema.enabled=true",
            "trainer.ema.decay=0.9",
            "trainer.clip_grad_norm=1.0",
            "trainer.channels_last=true",
        ),
        tmp_path,
    )
    state = load_checkpoint(tmp_path / "last.pt")  # torch.load(weights_only=True) inside
    assert CHECKPOINT_KEYS | {"ema"} <= set(state)
    assert state["model"].keys() == state["ema"].keys() == trainer.model.state_dict().keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    assert isinstance(state["config"], dict) and state["config"]["trainer"]["ema"]["enabled"] is True
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    assert {"accuracy", "model_accuracy"} <= set(results) and results["weights"] == "ema"
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "config.yaml").is_file()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_images_per_s"] > 0 and record["peak_memory_mb"] > 0


def test_rerun_of_a_finished_run_resumes_and_trains_no_more(toy_config, tmp_path: Path):
    first, _ = fit(toy_config(), tmp_path)
    again, results = fit(toy_config(), tmp_path)
    assert again.global_step == first.global_step and "accuracy" in results
    assert all(torch.equal(weights(first)[k], v) for k, v in weights(again).items())


def test_train_time_adds_up_over_resumed_segments_and_a_rerun_keeps_the_timings(toy_config, tmp_path: Path):
    _, first = fit(toy_config("trainer.epochs=2", "trainer.max_steps=8"), tmp_path)  # stopped after epoch 1 of 2
    start = time.perf_counter()
    _, resumed = fit(toy_config("trainer.epochs=2"), tmp_path)  # resumed for epoch 2
    second_segment = time.perf_counter() - start
    epoch_2 = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch_2["epoch"] == 2
    assert first["train_time_s"] + epoch_2["epoch_time_s"] <= resumed["train_time_s"]
    assert resumed["train_time_s"] <= first["train_time_s"] + second_segment
    assert resumed["train_images_per_s"] == epoch_2["train_images_per_s"] > 0
    assert load_checkpoint(tmp_path / "last.pt")["train_time_s"] == resumed["train_time_s"]

    _, rerun = fit(toy_config("trainer.epochs=2"), tmp_path)  # finished: re-reports, trains nothing
    assert (rerun["train_time_s"], rerun["train_images_per_s"]) == (
        resumed["train_time_s"],
        resumed["train_images_per_s"],
    )


def test_nonfinite_loss_skips_the_step_and_aborts_after_too_many_in_a_row(toy_config, tmp_path: Path):
    trainer, results = fit(toy_config("+task.poison_batches=[2]"), tmp_path / "one")
    assert results["nonfinite_skipped"] == 1
    assert trainer.global_step == 8  # the bad batch counts as a (skipped) step
    assert all(torch.isfinite(v).all() for v in weights(trainer).values())

    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        fit(toy_config("+task.poison_batches=[2,3,4]", "trainer.max_bad_steps=3"), tmp_path / "many")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_precisions_train_on_cpu(toy_config, tmp_path: Path, precision: str):
    trainer, results = fit(toy_config(f"trainer.precision={precision}"), tmp_path)
    assert results["precision"] == precision
    assert trainer.precision.scaler.is_enabled() == (precision == "fp16")
    assert bool(load_checkpoint(tmp_path / "last.pt")["scaler"]) == (precision == "fp16")
    assert all(torch.isfinite(v).all() for v in weights(trainer).values())


@pytest.mark.slow
def test_compiled_model_checkpoints_without_compile_prefixes(toy_config, tmp_path: Path):
    trainer, _ = fit(toy_config("trainer.compile=true"), tmp_path)
    assert trainer.eval_model is not trainer.model  # the compiled wrapper
    state = load_checkpoint(tmp_path / "last.pt")
    assert list(state["model"]) == ["1.weight", "1.bias", "4.weight", "4.bias"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_fused_optimizer(toy_config, tmp_path: Path):
    trainer, results = fit(
        toy_config("trainer.device=cuda", "trainer.precision=auto", "trainer.channels_last=true"), tmp_path
    )
    assert results["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert trainer.optimizer.param_groups[0]["fused"] is True  # SGD's fused CUDA kernel (optim.fused=auto)
    assert load_checkpoint(tmp_path / "last.pt")["model"]["1.weight"].device.type == "cpu"


def test_grad_checkpointing_trains_the_same_weights(tiny_config, tmp_path: Path):
    """trainer.grad_checkpointing=true switches it on in the task's model, and two updates of ResNet-18 give the
    plain run's weights and BatchNorm statistics (the recompute replays the forward exactly)."""
    overrides = ("trainer.max_steps=2", "trainer.max_eval_batches=1")
    plain, _ = fit(tiny_config(*overrides), tmp_path / "plain")
    checkpointed, _ = fit(tiny_config(*overrides, "trainer.grad_checkpointing=true"), tmp_path / "checkpointed")
    assert checkpointed.model.grad_checkpointing and not plain.model.grad_checkpointing
    for key, value in weights(plain).items():
        torch.testing.assert_close(weights(checkpointed)[key], value, rtol=1e-5, atol=1e-6)


def test_grad_checkpointing_on_a_model_without_it_is_one_config_error(toy_config, tmp_path: Path):
    with pytest.raises(ConfigError, match="has no set_grad_checkpointing.*trainer.grad_checkpointing=false"):
        Trainer(toy_config("trainer.grad_checkpointing=true"), build_task(toy_config()), tmp_path).fit()
