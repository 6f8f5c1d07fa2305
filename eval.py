"""Evaluate a checkpoint: python eval.py checkpoint=PATH [weights=auto|ema|model] [eval_image_size=288 crop_pct=1.0]
(see configs/eval.yaml).

Under torchrun the processes split the validation data; results.json is written once."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.config_checks import EVAL_CHECKS, check_config
from aaconv.engine.distributed import destroy_distributed, init_distributed
from aaconv.engine.runtime import select_device
from aaconv.errors import exit_on_user_error, require_values
from aaconv.runs import evaluate
from aaconv.utils.distributed import broadcast_object


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
