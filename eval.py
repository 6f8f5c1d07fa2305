"""Evaluate a checkpoint: python eval.py checkpoint=PATH [weights=auto|ema|model] [eval_image_size=288 crop_pct=1.0]
(see configs/eval.yaml).

Under torchrun the processes split the validation data; results.json is written once."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # aaconv (torch, timm: about 4 s) is imported once Hydra has composed the config, so that a typo in an
    # override is reported at once
    from aaconv.runs import eval_command

    eval_command(cfg)


if __name__ == "__main__":
    main()
