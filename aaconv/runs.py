"""A run's config, task and model, built the one way every entry point builds them.

- `compose_config(overrides)`: the config `python train.py <overrides>` runs with, through Hydra's compose API
  (defaults lists, experiments and command-line precedence as train.py has them), for scripts;
- `build_run(cfg)`: the task and a freshly built model of a config composed from the project's own tree;
- `rebuild_run(checkpoint)`: the same from a checkpoint, whose stored config is checked once as plain data
  (aaconv.engine.stored_config) and never instantiated, with the weights eval.py evaluates loaded.

eval.py (`evaluate`), scripts/export.py, scripts/visualize.py and scripts/fixres_table.py rebuild with `rebuild_run`;
scripts/benchmark.py, scripts/paper_table.py and scripts/count_params.py compose and build with the other two.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from aaconv.engine.checkpoint import load_checkpoint, select_weights
from aaconv.engine.config_checks import EVAL_CHECKS, build_model, check_config
from aaconv.engine.distributed import destroy_distributed, init_distributed
from aaconv.engine.evaluate import EVAL_SIZE_KEYS, evaluate_checkpoint, run_config
from aaconv.engine.run_record import hydra_record
from aaconv.engine.runtime import select_device
from aaconv.engine.stored_config import known_targets
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError, exit_on_user_error, require_values
from aaconv.tasks import Task, build_task, task_from_saved_config
from aaconv.utils.distributed import broadcast_object
from aaconv.utils.state_dict import load_model_state

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Run:
    """A run's resolved `config`, its `task`, and its `model` (CPU, train mode) with the `weights` a checkpoint
    gave it ("ema" or "model"; None for a freshly initialised model)."""

    config: DictConfig
    task: Task
    model: nn.Module
    weights: str | None = None


def config_options(group: str) -> list[str]:
    """The option names of config group `group` (configs/<group>/*.yaml)."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def check_option(group: str, option: str, where: str) -> None:
    """ConfigError in one line when `option` is not an option of `group`, listing the options."""
    if option not in config_options(group):
        raise ConfigError(f"no {group} option {option!r} in {where}; available: {', '.join(config_options(group))}")


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config `python train.py <overrides>` (config_name "eval": eval.py) runs with, without Hydra's
    runtime section. An override Hydra refuses (a typo, an unknown option) is a ConfigError: Hydra's message, one line."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(f"{e} {e.__cause__ or ''}".split())
        raise ConfigError(f"{message} (overrides: {' '.join(overrides)})") from e


def build_run(cfg: DictConfig) -> Run:
    """The task and a fresh model of `cfg`, a config composed from the project's own tree (compose_config or
    train.py's): its task is instantiated, so never pass a config read from a file."""
    task = build_task(cfg)
    return Run(cfg, task, build_model(task.build_model))


def rebuild_run(
    checkpoint: str | os.PathLike,
    weights: str = "auto",
    data_overrides: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    option: str = "weights",
) -> Run:
    """The run that wrote `checkpoint` (read with weights_only=True unless its `state` is given): its stored
    config checked as plain data, with `data_overrides` (eval.py's data_root, batch_size, workers, eval_image_size,
    crop_pct; None keeps the run's value) applied, its task, and its model holding the checkpoint's `weights`
    (auto: the EMA's when it has them; `option` is the name a missing EMA's error gives the choice)."""
    state = load_checkpoint(checkpoint) if state is None else state
    config = run_config(state, checkpoint, data_overrides or {}, known_targets(CONFIG_DIR))
    task = task_from_saved_config(config)
    which, state_dict = select_weights(state, weights, checkpoint, option=option)
    model = build_model(task.build_model)
    load_model_state(model, state_dict, source=f"checkpoint {checkpoint}")
    return Run(config, task, model, which)


def evaluate(
    cfg: DictConfig, state: Mapping[str, Any], device: torch.device, output_dir: str | os.PathLike
) -> dict[str, Any]:
    """eval.py's evaluation: rebuilds the run of checkpoint `state` (read from `cfg.checkpoint`) with
    configs/eval.yaml's values `cfg` (the data overrides and `weights`) and evaluates it on its validation split;
    returns the results, written to `output_dir`/results.json."""
    data = {"root": cfg.data_root, "batch_size": cfg.batch_size, "workers": cfg.workers}
    data |= {key: cfg.get(key) for key in EVAL_SIZE_KEYS}
    run = rebuild_run(cfg.checkpoint, cfg.weights, data, state=state)
    facts = {"weights": run.weights, "epochs": state["epoch"], "checkpoint": str(cfg.checkpoint)}
    return evaluate_checkpoint(run.task, run.model, run.config, device, output_dir, facts)


@exit_on_user_error
def train_command(cfg: DictConfig) -> float:
    """train.py's run of the composed config `cfg` (inside Hydra's main); returns the task's primary metric, for
    Hydra sweepers that optimise it. A user error is one line and exit status 2."""
    require_values(cfg)
    check_config(cfg)
    choices = HydraConfig.get().runtime.choices
    if choices.get("experiment") == "quickstart" and not cfg.data.get("generate"):  # real data, the toy recipe
        raise ConfigError(
            f"experiment=quickstart is the 10-epoch recipe for the built-in data, not for data={choices['data']}; "
            "choose one: experiment=paper/... (python scripts/paper_table.py lists them), or '~experiment' "
            "for the groups' own values"
        )
    task = build_task(cfg)
    # Hydra's .hydra/ record, written by the trainer once it holds the run directory (hydra.output_subdir: null)
    trainer = Trainer(cfg, task, HydraConfig.get().runtime.output_dir, record=hydra_record(cfg))
    return trainer.fit()[task.primary_metric]


@exit_on_user_error
def eval_command(cfg: DictConfig) -> None:
    """eval.py's evaluation of configs/eval.yaml's `cfg` (inside Hydra's main), on every process of a torchrun."""
    require_values(cfg)
    check_config(cfg, EVAL_CHECKS)
    state = load_checkpoint(cfg.checkpoint)
    env = init_distributed()
    output_dir = broadcast_object(HydraConfig.get().runtime.output_dir)  # rank 0's: timestamps may differ per process
    try:
        evaluate(cfg, state, select_device(cfg.device, env.local_rank, key="device"), output_dir)
    except BaseException:
        destroy_distributed(barrier=False)
        raise
    destroy_distributed()
