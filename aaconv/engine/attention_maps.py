"""What a trained model's attention does, as numbers: AA attention maps, AW kernel attention, CBAM's channel and
spatial gates, channel gates.

Layers are found in a model by kind (``attention_layers``) and their inputs captured with forward hooks during one
ordinary forward pass, so the model runs its own (fused) path unchanged. The numbers are then recomputed from the
captured inputs for the chosen layers only:

- ``aa``: an ``AAConv2d``. The per-head softmax probabilities of chosen query positions over all key positions,
  computed through the paper's formulation (``relative_logits_reference``) from the captured input of the layer's
  attention (its qkv projection). Each map sums to 1 over positions.
- ``aw``: an ``AWConv2d``. Its per-sample kernel attention A, (M, C_in, k, k), from the layer's own
  ``attention(x)``; summarised per map and kernel offset (mean over input channels) and per map and input
  channel (mean over offsets).
- ``cbam``: a CBAM module (``aaconv.layers.cbam.CBAM``), found by a duck-typed rule (``is_cbam``: callable
  ``channel_gate`` and ``spatial_gate`` methods, with the forward x' = x * channel_gate(x), x' * spatial_gate(x')),
  checked before the channel-gate rule below (which CBAM's ``fc1`` / ``fc2`` also match). From the module's captured
  input x, its channel gate M_c (C,) = ``channel_gate(x)`` and its spatial map M_s (H, W) = ``spatial_gate(x * M_c)``,
  through the module's own methods in eval mode (the spatial gate's BN uses its running statistics), both in (0, 1);
  the spatial map has the size of the module's input and output, the block's output map.
- ``gate``: a channel gate, any module that returns its input times a per-channel factor. Found by a duck-typed
  rule (``is_channel_gate``): 1x1-conv children ``fc1`` and ``fc2`` with ``fc2`` restoring ``fc1``'s input width
  (the squeeze-excite layout of ``SqueezeExcite`` and timm's ``SEModule``). The factor is read from the forward's
  input x and output y, g_c = sum_hw(x y) / sum_hw(x^2), so it does not depend on how the gate computes it (average
  or average + max pooling alike); a channel whose input is all zero (a zero-initialised residual BN before
  training) has no factor to read and gives NaN. A gate of another shape is one more rule in ``GATE_RULES`` and its
  reduction beside ``gate_factor``.

``attention_image_grid`` renders AA maps as one RGB tensor for TensorBoard / W&B (``logger.attention_images``), which
the trainer callback ``AttentionImages`` logs at each evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aaconv.engine.callbacks import Callback
from aaconv.errors import ConfigError
from aaconv.layers import VARIANTS, AAConv2d, AWConv2d
from aaconv.layers.relative_attention import relative_logits_reference
from aaconv.layers.relative_tables import relative_table

if TYPE_CHECKING:
    from aaconv.engine.trainer import Trainer

KINDS = ("aa", "aw", "cbam", "gate")
"""The layer kinds, in the order a default view picks the first one a model has."""


def is_cbam(module: nn.Module) -> bool:
    """The duck-typed rule for a CBAM module: callable ``channel_gate`` (x -> (B, C, 1, 1)) and ``spatial_gate``
    (x -> (B, 1, H, W)) methods, the forward being x' = x * channel_gate(x), x' * spatial_gate(x') (``CBAM``)."""
    return callable(getattr(module, "channel_gate", None)) and callable(getattr(module, "spatial_gate", None))


def is_channel_gate(module: nn.Module) -> bool:
    """The duck-typed rule for a channel gate: 1x1-conv children ``fc1`` (C -> C/r) and ``fc2`` (C/r -> C), and not
    an AW-conv (whose generator has the same layout with M = 1)."""
    fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
    return (
        not isinstance(module, AWConv2d)
        and isinstance(fc1, nn.Conv2d)
        and isinstance(fc2, nn.Conv2d)
        and fc1.kernel_size == fc2.kernel_size == (1, 1)
        and fc2.out_channels == fc1.in_channels
    )


GATE_RULES: dict[str, Callable[[nn.Module], bool]] = {"gate": is_channel_gate}
"""Gate kind -> the rule that recognises its modules; ``gate_factor`` reads each kind's factor."""


def layer_kind(module: nn.Module) -> str | None:
    """``"aa"``, ``"aw"``, ``"cbam"``, a ``GATE_RULES`` kind, or ``None`` for a module that is no attention layer;
    CBAM is checked before the gate rules."""
    if isinstance(module, AAConv2d):
        return "aa"
    if isinstance(module, AWConv2d):
        return "aw"
    if is_cbam(module):
        return "cbam"
    return next((kind for kind, rule in GATE_RULES.items() if rule(module)), None)


def attention_layers(model: nn.Module) -> dict[str, str]:
    """{module name: kind} of every attention layer in ``model``, in module order (an ``aw+aa`` conv lists its
    AA layer ``name`` and its AW conv branch ``name.conv``)."""
    return {name: kind for name, module in model.named_modules() if (kind := layer_kind(module)) is not None}


def check_layer(layers: Mapping[str, str], name: str, kinds: Sequence[str] = KINDS) -> str:
    """The kind of layer ``name``; a ConfigError listing the valid names when it is not one of ``layers``' of
    ``kinds``."""
    valid = [n for n, kind in layers.items() if kind in kinds]
    if name not in valid:
        raise ConfigError(f"no attention layer {name!r} in this model; valid layers: {', '.join(valid)}")
    return layers[name]


def attention_options() -> list[str]:
    """The ``attention=`` names of every variant with attention layers: ``VARIANTS`` but none, + written _."""
    return [variant.replace("+", "_") for variant in VARIANTS if variant != "none"]


def require_attention(layers: Mapping[str, str], source: str) -> None:
    """A ConfigError naming ``source`` and the attention variants when the model has no attention layer."""
    if not layers:
        *options, last = attention_options()
        raise ConfigError(
            f"{source} has no attention layers (AA, AW, CBAM or channel gates such as SE); valid checkpoints are "
            f"those trained with attention={', '.join(options)} or {last}"
        )


# --- Capturing layer inputs -----------------------------------------------------------------------------------


@contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, tuple[Tensor, Tensor | None]]]:
    """Records, during the forward passes in the block, for each named layer: AA, the (qkv, None) input of its
    attention; AW and CBAM, its (input, None); a gate, its (input, output). Later passes overwrite earlier ones."""
    modules = dict(model.named_modules())
    captured: dict[str, tuple[Tensor, Tensor | None]] = {}
    handles = []
    for name in names:
        module = modules[name]
        kind = layer_kind(module)
        if kind == "aa":
            handles.append(
                module.attention.register_forward_pre_hook(
                    lambda _m, args, name=name: captured.__setitem__(name, (args[0].detach(), None))
                )
            )
        elif kind in ("aw", "cbam"):
            handles.append(
                module.register_forward_pre_hook(
                    lambda _m, args, name=name: captured.__setitem__(name, (args[0].detach(), None))
                )
            )
        else:
            handles.append(
                module.register_forward_hook(
                    lambda _m, args, out, name=name: captured.__setitem__(name, (args[0].detach(), out.detach()))
                )
            )
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


def run_captured(model: nn.Module, images: Tensor | list[Tensor], names: Sequence[str]) -> dict[str, Any]:
    """One eval-mode, no-grad forward of ``images`` recording ``names`` (``capture``); the model's train/eval
    mode is put back afterwards."""
    with eval_mode(model), torch.no_grad(), capture(model, names) as captured:
        model(images)
    return captured


# --- AA ----------------------------------------------------------------------------------------------------------


def aa_attention_probs(layer: AAConv2d, qkv: Tensor) -> Tensor:
    """The attention probabilities of an AA layer, through the paper's formulation.

    qkv: (B, 2*dk + dv, H, W), the input of ``layer.attention`` (captured by ``capture``) -> (B, N_h, HW, HW),
    softmax over the last dim (key positions, row-major y * W + x), in float32 or qkv's wider dtype. The one place that reads AA's
    attributes: ``attention.dk``, ``.dv``, ``.num_heads``, ``.rel_width`` / ``.rel_height`` (None without relative
    logits), read at the map's size by ``relative_table`` as the layer does.
    """
    attn = layer.attention
    batch, _, height, width = qkv.shape
    dtype = torch.promote_types(qkv.dtype, torch.float32)  # half-precision activations: at least float32
    q, k, _ = qkv.to(dtype).split([attn.dk, attn.dk, attn.dv], dim=1)
    q, k = (t.reshape(batch, attn.num_heads, -1, height * width).transpose(-1, -2) for t in (q, k))
    q = q * (attn.dk // attn.num_heads) ** -0.5
    logits = q @ k.transpose(-1, -2)
    if attn.rel_width is not None and attn.rel_height is not None:
        rel_w = relative_table(attn.rel_width, width).to(dtype)
        rel_h = relative_table(attn.rel_height, height).to(dtype)
        logits = logits + relative_logits_reference(q, rel_w, rel_h, height, width)
    return logits.softmax(-1)


@dataclass
class AAMaps:
    """Per-head attention maps of chosen queries of one AA layer, for one image.

    maps: (Q, N_h, H', W'), each map summing to 1 over its H' x W' key positions; queries: the (x, y) image
    pixels asked for; cells: the (column, row) of the H' x W' attention grid each query falls in.
    """

    layer: str
    maps: Tensor
    queries: list[tuple[int, int]]
    cells: list[tuple[int, int]]


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


@torch.no_grad()
def aa_maps(model: nn.Module, image: Tensor, layer: str, queries: Sequence[tuple[int, int]]) -> AAMaps:
    """``AAMaps`` of AA ``layer`` for a (1, 3, H, W) model input and queries (x, y) in its pixels."""
    check_queries(queries, *image.shape[-2:])
    qkv, _ = run_captured(model, image, [layer])[layer]
    probs = aa_attention_probs(dict(model.named_modules())[layer], qkv)[0]  # (N_h, HW, HW)
    grid = tuple(qkv.shape[-2:])
    cells = [query_cell(q, tuple(image.shape[-2:]), grid) for q in queries]
    maps = torch.stack([probs[:, row * grid[1] + col].unflatten(-1, grid) for col, row in cells])
    return AAMaps(layer, maps, list(queries), cells)


# --- AW ----------------------------------------------------------------------------------------------------------


@dataclass
class AWMaps:
    """The kernel attention of one AW layer for one image.

    attention: (M, C_in, k, k), A of the paper (W' = K * A + K); per_offset: (M, k, k), A's mean over input
    channels; per_channel: (M, C_in), A's mean over kernel offsets.
    """

    layer: str
    attention: Tensor

    @property
    def per_offset(self) -> Tensor:
        return self.attention.mean(1)

    @property
    def per_channel(self) -> Tensor:
        return self.attention.mean((2, 3))


def aw_kernel_attention(layer: AWConv2d, x: Tensor) -> Tensor:
    """A of an AW layer: its input x (B, C_in, H, W) -> (B, M, C_in, k, k), from the layer's ``attention``."""
    attention = layer.attention(x.to(layer.fc1.weight.dtype))
    return attention.unflatten(1, (layer.num_maps, -1))


@torch.no_grad()
def aw_maps(model: nn.Module, image: Tensor, layer: str) -> AWMaps:
    """``AWMaps`` of AW ``layer`` for a (1, 3, H, W) model input."""
    x, _ = run_captured(model, image, [layer])[layer]
    return AWMaps(layer, aw_kernel_attention(dict(model.named_modules())[layer], x)[0])


# --- CBAM --------------------------------------------------------------------------------------------------------


@dataclass
class CBAMMaps:
    """The gates of one CBAM module for one image.

    channel: (C,), M_c, each channel's factor; spatial: (H, W), M_s, each position's factor on the channel-gated
    input, H x W the module's input (and output) size. Both in (0, 1).
    """

    layer: str
    channel: Tensor
    spatial: Tensor


def cbam_gates(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """A CBAM module's gates for its input x (B, C, H, W), through its own methods: (M_c (B, C), M_s (B, H, W)) with
    M_c = ``channel_gate(x)`` and M_s = ``spatial_gate(x * M_c)``, as its forward applies them. Call it with the
    module in eval mode (its spatial BN)."""
    dtype = next(module.parameters()).dtype
    x = x.to(dtype)
    channel = module.channel_gate(x)
    spatial = module.spatial_gate(x * channel)
    return channel.flatten(1), spatial[:, 0]


@torch.no_grad()
def cbam_maps(model: nn.Module, image: Tensor, layers: Sequence[str]) -> dict[str, CBAMMaps]:
    """{CBAM layer: its ``CBAMMaps``} for a (1, 3, H, W) model input; the model runs (and its gates are computed)
    in eval mode, its train/eval mode put back afterwards."""
    modules = dict(model.named_modules())
    with eval_mode(model):
        captured = run_captured(model, image, layers)
        gates = {name: cbam_gates(modules[name], captured[name][0]) for name in layers}
    return {name: CBAMMaps(name, channel[0], spatial[0]) for name, (channel, spatial) in gates.items()}


# --- Gates -------------------------------------------------------------------------------------------------------


def gate_factor(x: Tensor, y: Tensor) -> Tensor:
    """The per-channel factor g of y = x * g: (B, C, H, W) input and output -> (B, C), the least-squares
    sum_hw(x y) / sum_hw(x^2); NaN for a channel whose input is all zero (its factor has no effect)."""
    x, y = x.double(), y.double()
    energy = (x * x).sum((2, 3))
    return ((x * y).sum((2, 3)) / energy.where(energy > 0, torch.nan)).float()


@torch.no_grad()
def gate_values(model: nn.Module, image: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """{gate layer: its (C,) factors} for a (1, 3, H, W) model input."""
    captured = run_captured(model, image, layers)
    return {name: gate_factor(x, y)[0] for name, (x, y) in captured.items()}


# --- Images for the training loggers -----------------------------------------------------------------------------


def _heat(values: Tensor) -> Tensor:
    """(..., H, W) values in [0, 1] -> (..., 3, H, W) black-red-yellow-white colours."""
    return torch.stack([(3 * values).clamp(0, 1), (3 * values - 1).clamp(0, 1), (3 * values - 2).clamp(0, 1)], -3)


@torch.no_grad()
def attention_image_grid(model: nn.Module, images: Tensor, layer: str) -> Tensor:
    """One RGB picture of AA ``layer``'s attention for the image centres: a row per image of (B, 3, H, W)
    ``images``, the image then one map per head (each scaled to its maximum), upsampled to H x W ->
    (3, B * H, (1 + N_h) * W), values in [0, 1]."""
    height, width = images.shape[-2:]
    qkv, _ = run_captured(model, images, [layer])[layer]
    probs = aa_attention_probs(dict(model.named_modules())[layer], qkv)  # (B, N_h, HW, HW)
    grid = tuple(qkv.shape[-2:])
    col, row = query_cell((width // 2, height // 2), (height, width), grid)
    maps = probs[:, :, row * grid[1] + col].unflatten(-1, grid)  # (B, N_h, H', W')
    maps = maps / maps.amax((2, 3), keepdim=True)
    maps = F.interpolate(maps, size=(height, width), mode="nearest")
    lo, hi = images.amin((1, 2, 3), keepdim=True), images.amax((1, 2, 3), keepdim=True)
    shown = ((images.float() - lo) / (hi - lo).clamp_min(1e-12)).cpu()
    tiles = torch.cat([shown[:, None], _heat(maps.cpu())], dim=1)  # (B, 1 + N_h, 3, H, W)
    return tiles.permute(2, 0, 3, 1, 4).reshape(3, len(images) * height, -1)


def log_attention_images(logger: Any, model: nn.Module, dataset: Any, step: int, logger_cfg: Mapping[str, Any]) -> None:
    """``logger.attention_images`` (``logger_cfg``'s key, 0 when absent): sends ``attention_image_grid`` of the
    model's first AA layer for the first that many images of ``dataset`` (the same ones at every evaluation) to
    ``logger.log_images``. Nothing when it is 0; a warning when the model has no AA layer."""
    count = int(logger_cfg.get("attention_images", 0))
    if count <= 0:
        return
    aa = [name for name, kind in attention_layers(model).items() if kind == "aa"]
    if not aa:
        warnings.warn(
            "logger.attention_images: the model has no AA layer, no attention images are logged", stacklevel=2
        )
        return
    device = next(model.parameters()).device
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))]).to(device)
    logger.log_images({f"attention/{aa[0]}": attention_image_grid(model, images, aa[0])}, step)


class AttentionImages(Callback):
    """``log_attention_images`` of the trained model (not the EMA) after each evaluation, on rank 0
    (``logger.attention_images`` > 0)."""

    def __init__(self, logger_cfg: Mapping[str, Any]):
        self.logger_cfg = logger_cfg

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.is_main:
            dataset = trainer.val_loader.dataset
            log_attention_images(trainer.logger, trainer.model, dataset, trainer.global_step, self.logger_cfg)
