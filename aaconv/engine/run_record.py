"""A run's Hydra record (`<run dir>/.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`), written by the run
that holds the run directory.

Hydra writes these files before the task function starts, so a second job on the same `hydra.run.dir` would
replace the record of the run it is then refused by (aaconv.engine.run_lock). configs/train.yaml therefore
sets `hydra.output_subdir: null`, train.py takes the same text here, and the trainer writes it once it holds
the lock and its resume succeeded, beside config.yaml. The files read as Hydra's own (scripts/paper_table.py,
scripts/visualize.py read them); `hydra.yaml` says `output_subdir: null`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

RECORD_DIR = ".hydra"


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """The files Hydra would write into `.hydra/` for the running job whose task config is `cfg`, as
    {path relative to the run directory: text}. Call inside the Hydra job (HydraConfig set)."""
    hydra = HydraConfig.instance().cfg  # {"hydra": ...}: what Hydra saves as hydra.yaml
    assert hydra is not None, "hydra_record() runs inside a Hydra job"
    return {
        f"{RECORD_DIR}/config.yaml": OmegaConf.to_yaml(cfg),
        f"{RECORD_DIR}/hydra.yaml": OmegaConf.to_yaml(hydra),
        f"{RECORD_DIR}/overrides.yaml": OmegaConf.to_yaml(hydra.hydra.overrides.task),
    }


def write_record(run_dir: str | os.PathLike, record: Mapping[str, str]) -> None:
    """Writes each file of `record` (see hydra_record) under `run_dir`, replacing what was there."""
    for name, text in record.items():
        path = Path(run_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
