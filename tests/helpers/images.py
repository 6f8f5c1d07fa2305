"""Image files as users have them, for the data-reading tests."""

from __future__ import annotations

from pathlib import Path


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


def write_tree(root: Path, per_class: int = 5) -> Path:
    """An ImageFolder tree: train/ and val/ with 3 classes (n01, n02, n03) of `per_class` distinct JPEGs each, of
    two sizes."""
    from PIL import Image

    for split in ("train", "val"):
        for label, name in enumerate(("n01", "n02", "n03")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (40, 30) if i % 2 else (24, 36)
                Image.new("RGB", size, (40 * i, 80 * label, 7 * len(split))).save(folder / f"{i}.JPEG", quality=90)
    return root
