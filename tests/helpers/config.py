"""The repository's paths and tiny shapes configs that train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

# A shapes set small enough to generate in about a second; the CLI tests reuse it through AACONV_CACHE.
TINY_SHAPES = {
    "seed": 0,
    "image_size": 32,
    "train_per_class": 40,
    "val_per_class": 10,
    "det_image_size": 96,
    "det_train_images": 48,
    "det_val_images": 16,
    "det_max_objects": 3,
}
TINY_OVERRIDES = [f"data.generate.{k}={v}" for k, v in TINY_SHAPES.items()] + [
    "data.image_size=32",
    "data.batch_size=16",
    "data.workers=0",
    "trainer.epochs=1",
    "logger.progress_bar=false",
]


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config `python train.py <overrides>` would run with (no Hydra runtime section)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def data_configs() -> dict[str, dict]:
    """The composed `data` group of every configs/data/*.yaml, by option name (plain dicts, unresolved)."""
    from omegaconf import OmegaConf

    return {
        path.stem: OmegaConf.to_container(compose_config(f"data={path.stem}").data)
        for path in sorted((CONFIGS / "data").glob("*.yaml"))
    }
