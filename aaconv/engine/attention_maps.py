"""What a trained model's attention does, as numbers: whatever each attention part says its layers can show.

Each registered part (aaconv.layers.parts) may carry a ``Drawing``: the kind of its layers, how to find them (its
own module classes, and a duck-typed rule for layers of the same kind it did not build, such as timm's channel
gates) and how to read their numbers from one ordinary forward pass. This module knows no part by name:

- ``attention_layers`` finds the layers of a model, by kind: a module is of the kind of the first part (in
  registration order) whose own classes it is an instance of, else of the first whose ``also_finds`` rule accepts
  it;
- ``read_layers`` runs the model once, in eval mode without gradients, records the input and output of the chosen
  layers with forward hooks (so the model runs its own fused path unchanged) and hands them to each part's
  ``read``;
- ``query_maps`` and ``attention_image_grid`` draw the layers whose drawing is ``per_query`` (AA: each head's
  softmax over the key positions for chosen queries, read from the layer's own attention core), for
  scripts/visualize.py and, at each evaluation, the training loggers (``logger.attention_images``).

What the parts read today (their files say how): AA, the attention probabilities; AW, the kernel attention A;
CBAM, its channel and spatial gates; channel gates (SE, timm's SEModule), each channel's factor.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aaconv.data.device_normalize import DeviceNormalize
from aaconv.engine.callbacks import Callback
from aaconv.errors import ConfigError
from aaconv.layers import VARIANTS, parts
from aaconv.layers.parts import Drawing

if TYPE_CHECKING:
    from aaconv.engine.trainer import Trainer


def drawings() -> dict[str, Drawing]:
    """{kind: drawing} of every registered part that can draw, in registration order (the order a default view
    picks the first kind a model has)."""
    return {part.drawing.kind: part.drawing for part in parts().values() if part.drawing is not None}


def layer_kind(module: nn.Module) -> str | None:
    """The kind of ``module`` (module docstring), or None for a module that is no attention layer."""
    drawn = [part for part in parts().values() if part.drawing is not None]
    for part in drawn:
        if isinstance(module, part.modules):
            return part.drawing.kind
    return next(
        (part.drawing.kind for part in drawn if part.drawing.also_finds and part.drawing.also_finds(module)), None
    )


def attention_layers(model: nn.Module) -> dict[str, str]:
    """{module name: kind} of every attention layer in ``model``, in module order (an ``aw+aa`` conv lists its
    AA layer ``name`` and its AW conv branch ``name.conv``)."""
    return {name: kind for name, module in model.named_modules() if (kind := layer_kind(module)) is not None}


def check_layer(layers: Mapping[str, str], name: str) -> str:
    """The kind of layer ``name``; a ConfigError listing the valid names when it is not one of ``layers``."""
    if name not in layers:
        raise ConfigError(f"no attention layer {name!r} in this model; valid layers: {', '.join(layers)}")
    return layers[name]


def attention_options() -> list[str]:
    """The ``attention=`` names of every variant with attention layers: ``VARIANTS`` but none, + written _."""
    return [variant.replace("+", "_") for variant in VARIANTS if variant != "none"]


def require_attention(layers: Mapping[str, str], source: str) -> None:
    """A ConfigError naming ``source`` and the attention variants when the model has no attention layer."""
    if not layers:
        *options, last = attention_options()
        raise ConfigError(
            f"{source} has no attention layers ({', '.join(drawings())}); valid checkpoints are those trained with "
            f"attention={', '.join(options)} or {last}"
        )


# --- Reading layers ----------------------------------------------------------------------------------------------


@contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, tuple[Tensor, Tensor]]]:
    """Records, during the forward passes in the block, the (input, output) of each named layer. Later passes
    overwrite earlier ones."""
    modules = dict(model.named_modules())
    captured: dict[str, tuple[Tensor, Tensor]] = {}

    def record(name: str) -> Any:
        return lambda _module, args, out: captured.__setitem__(name, (args[0].detach(), out.detach()))

    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode within the block; its train/eval mode is put back afterwards."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


@torch.no_grad()
def read_layers(model: nn.Module, images: Tensor | list[Tensor], names: Sequence[str]) -> dict[str, dict[str, Tensor]]:
    """{layer: its part's numbers} (``Drawing.read``: each a tensor whose first dim is the batch) for layers
    ``names`` of ``model`` on ``images``, detached: one eval-mode forward without gradients; the model's train/eval
    mode is put back afterwards."""
    modules = dict(model.named_modules())
    kinds = drawings()
    with eval_mode(model):
        with capture(model, names) as captured:
            model(images)
        numbers = {name: kinds[layer_kind(modules[name])].read(modules[name], *captured[name]) for name in names}
    return {name: {key: value.detach() for key, value in read.items()} for name, read in numbers.items()}


# --- Per-query attention -----------------------------------------------------------------------------------------


@dataclass
class QueryMaps:
    """Per-head attention maps of chosen queries of one ``per_query`` layer (AA), for one image.

    maps: (Q, heads, H', W'), each map summing to 1 over its H' x W' key positions; queries: the (x, y) image
    pixels asked for; cells: the (column, row) of the H' x W' attention grid each query falls in.
    """

    layer: str
    maps: Tensor
    queries: list[tuple[int, int]]
    cells: list[tuple[int, int]]


def query_layers(layers: Mapping[str, str]) -> list[str]:
    """The names among ``layers`` ({name: kind}) whose kind draws per query (``Drawing.per_query``)."""
    kinds = drawings()
    return [name for name, kind in layers.items() if kinds[kind].per_query]


def check_queries(queries: Sequence[tuple[int, int]], height: int, width: int) -> None:
    """A ConfigError naming the valid range when a query (x, y) is outside an H x W image."""
    for x, y in queries:
        if not (0 <= x < width and 0 <= y < height):
            raise ConfigError(
                f"query {x},{y} is outside the {width}x{height} image the model sees; valid queries are X,Y with "
                f"X in 0..{width - 1} and Y in 0..{height - 1}"
            )


def query_cell(query: tuple[int, int], image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """(column, row) of the attention grid (H', W') cell holding image pixel (x, y) of an (H, W) image: the
    grid's cells tile the image evenly."""
    (x, y), (height, width), (rows, cols) = query, image_size, grid
    return min(x * cols // width, cols - 1), min(y * rows // height, rows - 1)


def query_maps(model: nn.Module, image: Tensor, layer: str, queries: Sequence[tuple[int, int]]) -> QueryMaps:
    """``QueryMaps`` of ``per_query`` ``layer`` for a (1, 3, H, W) model input and queries (x, y) in its pixels."""
    check_queries(queries, *image.shape[-2:])
    attention = read_layers(model, image, [layer])[layer]["attention"][0]  # (heads, H', W', H', W')
    grid = tuple(attention.shape[1:3])
    cells = [query_cell(q, tuple(image.shape[-2:]), grid) for q in queries]
    maps = torch.stack([attention[:, row, col] for col, row in cells])
    return QueryMaps(layer, maps, list(queries), cells)


# --- Images for the training loggers -----------------------------------------------------------------------------


def _heat(values: Tensor) -> Tensor:
    """(..., H, W) values in [0, 1] -> (..., 3, H, W) black-red-yellow-white colours."""
    return torch.stack([(3 * values).clamp(0, 1), (3 * values - 1).clamp(0, 1), (3 * values - 2).clamp(0, 1)], -3)


def attention_image_grid(model: nn.Module, images: Tensor, layer: str) -> Tensor:
    """One RGB picture of ``per_query`` ``layer``'s attention for the image centres: a row per image of (B, 3, H, W)
    ``images``, the image then one map per head (each scaled to its maximum), upsampled to H x W ->
    (3, B * H, (1 + heads) * W), values in [0, 1]."""
    height, width = images.shape[-2:]
    attention = read_layers(model, images, [layer])[layer]["attention"]  # (B, heads, H', W', H', W')
    grid = tuple(attention.shape[2:4])
    col, row = query_cell((width // 2, height // 2), (height, width), grid)
    maps = attention[:, :, row, col]  # (B, heads, H', W')
    maps = maps / maps.amax((2, 3), keepdim=True)
    maps = F.interpolate(maps, size=(height, width), mode="nearest")
    lo, hi = images.amin((1, 2, 3), keepdim=True), images.amax((1, 2, 3), keepdim=True)
    shown = ((images.float() - lo) / (hi - lo).clamp_min(1e-12)).cpu()
    tiles = torch.cat([shown[:, None], _heat(maps.cpu())], dim=1)  # (B, 1 + heads, 3, H, W)
    return tiles.permute(2, 0, 3, 1, 4).reshape(3, len(images) * height, -1)


def log_attention_images(logger: Any, model: nn.Module, dataset: Any, step: int, logger_cfg: Mapping[str, Any]) -> None:
    """``logger.attention_images`` (``logger_cfg``'s key, 0 when absent): sends ``attention_image_grid`` of the
    model's first ``per_query`` layer for the first that many images of ``dataset`` (the same ones at every
    evaluation) to ``logger.log_images``. Nothing when it is 0; a warning when the model has no such layer."""
    count = int(logger_cfg.get("attention_images", 0))
    if count <= 0:
        return
    layers = query_layers(attention_layers(model))
    if not layers:
        kinds = [kind for kind, drawing in drawings().items() if drawing.per_query]
        warnings.warn(
            f"logger.attention_images: the model has no layer drawn per query ({', '.join(kinds)}), no attention "
            "images are logged",
            stacklevel=2,
        )
        return
    device = next(model.parameters()).device
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    images = DeviceNormalize()(images, device)  # uint8 samples (ImageFolder's) normalised, float ones only moved
    logger.log_images({f"attention/{layers[0]}": attention_image_grid(model, images, layers[0])}, step)


class AttentionImages(Callback):
    """``log_attention_images`` of the trained model (not the EMA) after each evaluation, on rank 0
    (``logger.attention_images`` > 0)."""

    def __init__(self, logger_cfg: Mapping[str, Any]):
        self.logger_cfg = logger_cfg

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.is_main:
            dataset = trainer.val_loader.dataset
            log_attention_images(trainer.logger, trainer.model, dataset, trainer.global_step, self.logger_cfg)
