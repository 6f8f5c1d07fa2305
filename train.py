"""Train a model: python train.py [group=option ...] [key=value ...]  (see configs/train.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns the task's primary metric, for Hydra sweepers that optimise it."""
    # aaconv (torch, timm: about 4 s) is imported once Hydra has composed the config, so that a typo in an
    # override is reported at once
    from aaconv.runs import train_command

    return train_command(cfg)


if __name__ == "__main__":
    main()
