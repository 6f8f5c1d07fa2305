"""Evaluate a checkpoint: python eval.py checkpoint=PATH [weights=auto|ema|model] [eval_image_size=288 crop_pct=1.0]
(see configs/eval.yaml).

Under torchrun the processes split the validation data; results.json is written once."""

import os
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.config_checks import EVAL_CHECKS, check_config
from aaconv.engine.distributed import destroy_distributed, init_distributed
from aaconv.engine.evaluate import evaluate_checkpoint, run_config
from aaconv.engine.runtime import select_device
from aaconv.engine.stored_config import known_targets
from aaconv.errors import exit_on_user_error, require_values
from aaconv.tasks import task_from_saved_config
from aaconv.utils.distributed import broadcast_object

CONFIGS = Path(__file__).resolve().parent / "configs"


def evaluate(cfg: DictConfig, state: dict[str, Any], device: torch.device, output_dir: str | os.PathLike) -> dict:
    """Rebuilds the run of checkpoint `state` (read from `cfg.checkpoint`) with eval.yaml's overrides `cfg` and
    evaluates it on its validation split; returns the results, written to `output_dir`/results.json."""
    run_cfg = run_config(state, cfg, known_targets(CONFIGS))  # plain values only: a checkpoint runs no code
    task = task_from_saved_config(run_cfg)
    return evaluate_checkpoint(task, state, run_cfg, device, output_dir, checkpoint=cfg.checkpoint, weights=cfg.weights)


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
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


if __name__ == "__main__":
    main()
