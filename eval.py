"""Evaluate a checkpoint: python eval.py checkpoint=PATH  (see configs/eval.yaml)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.evaluate import evaluate_checkpoint, run_config
from aaconv.engine.runtime import select_device
from aaconv.errors import exit_on_user_error, require_values
from aaconv.tasks import task_from_saved_config


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    require_values(cfg)
    state = load_checkpoint(cfg.checkpoint)
    run_cfg = run_config(state, cfg)
    task = task_from_saved_config(run_cfg)
    evaluate_checkpoint(task, state, run_cfg, select_device(cfg.device), HydraConfig.get().runtime.output_dir,
                        checkpoint=cfg.checkpoint)


if __name__ == "__main__":
    main()
