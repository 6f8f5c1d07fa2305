"""Shared fixtures: a tiny built-in shapes set and composed Hydra configs that train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# A shapes set small enough to generate in about a second; the CLI tests reuse it through AACONV_CACHE.
TINY_SHAPES = {
    "seed": 0, "image_size": 32, "train_per_class": 40, "val_per_class": 10,
    "det_image_size": 96, "det_train_images": 48, "det_val_images": 16, "det_max_objects": 3,
}
TINY_OVERRIDES = [f"data.generate.{k}={v}" for k, v in TINY_SHAPES.items()] + [
    "data.image_size=32", "data.batch_size=16", "data.workers=0", "trainer.epochs=1", "logger.progress_bar=false",
]


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so each tiny dataset is generated once."""
    return tmp_path_factory.mktemp("aaconv-cache")


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config `python train.py <overrides>` would run with (no Hydra runtime section)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def tiny_config(data_cache: Path):
    """tiny_config(*overrides) -> a shapes config that trains one short epoch on the CPU."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(f"data.root={data_cache}", *TINY_OVERRIDES, *overrides)

    return make


def write_messy_imagefolder(root: Path) -> list[Path]:
    """An ImageFolder tree (train/ and val/, 2 classes) as users have them: RGB, CMYK and grayscale JPEGs and a
    PNG named .JPEG, all readable, plus a zero-byte file and a truncated JPEG in each split. Returns the bad files."""
    from PIL import Image

    bad = []
    for split in ("train", "val"):
        for label, name in enumerate(("n01", "n02")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 30), (60 * i, 100 * label, 50)).save(folder / f"rgb{i}.JPEG", "JPEG")
        folder = root / split / "n01"
        Image.new("CMYK", (40, 30), (0, 50, 100, 0)).save(folder / "cmyk.JPEG", "JPEG")
        Image.new("L", (40, 30), 128).save(folder / "gray.JPEG", "JPEG")
        Image.new("RGB", (40, 30), (9, 9, 9)).save(folder / "png_named_jpeg.JPEG", "PNG")
        (folder / "empty.JPEG").write_bytes(b"")
        data = (folder / "rgb0.JPEG").read_bytes()
        (folder / "truncated.JPEG").write_bytes(data[: len(data) // 2])
        bad += [folder / "empty.JPEG", folder / "truncated.JPEG"]
    return bad
