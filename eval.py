"""Evaluate a checkpoint: python eval.py checkpoint=PATH  (see configs/eval.yaml)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aaconv.engine.evaluate import evaluate_checkpoint
from aaconv.errors import exit_on_user_error, require_values


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    require_values(cfg)
    evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
