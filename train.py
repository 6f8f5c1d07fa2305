"""Train a model: python train.py [group=option ...] [key=value ...]  (see configs/train.yaml)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aaconv.engine.config_checks import check_config
from aaconv.engine.run_record import hydra_record
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError, exit_on_user_error, require_values
from aaconv.tasks import build_task


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """Returns the task's primary metric, for Hydra sweepers that optimise it."""
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


if __name__ == "__main__":
    main()
