"""Pictures of what a trained model's attention does, and of how runs compare.

    python scripts/visualize.py attention RUN/last.pt --image IMG [--layer NAME] [--query X,Y ...] [--out PNG]
    python scripts/visualize.py curves RUN_DIR [RUN_DIR ...] [--out PNG]

attention: the image as the model sees it (the checkpoint's evaluation resize and crop), one forward pass, then for
the chosen layer (default: the first layer of the first kind the model has, in the parts' order: AA, AW, then every
CBAM module, then every channel gate) what its part reads (aaconv.layers.parts.Drawing):
- AA: per query (rows) and head (columns) the softmax attention over the layer's key positions, overlaid on the
  image; each map sums to 1. Queries are X,Y pixels of the image the model sees (default: its centre).
- AW: per attention map m, A's mean over input channels at each kernel offset, and its mean over offsets for each
  input channel (W' = K * A + K).
- CBAM: per module, its channel gate's per-channel factors and its spatial map (one factor per position of the
  block's output map, on the channel-gated input) stretched over the image.
- gates (SE): each gate module's per-channel factors.
- a kind without a picture of its own here (a new part's): each of its numbers as a heat map, averaged down to two
  dimensions.
The numbers come from aaconv.engine.attention_maps. A detection checkpoint shows its backbone on the image resized,
normalised and padded by the detector's own transform.

curves: loss, lr, top-1 (or AP) and training images/s against epoch from each run's metrics.jsonl (a multirun
folder: every job), one line per run labelled by the overrides that tell the runs apart; a PNG, and an HTML page
with the same plots when plotly is installed.

Both need matplotlib (pip install -e '.[plot]').
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from aaconv.data import data_format
from aaconv.data.device_normalize import DeviceNormalize
from aaconv.engine import attention_maps as am
from aaconv.errors import ConfigError, DataError, exit_on_user_error, first_line
from aaconv.utils.cli import positive_int

CURVES = (
    ("train_loss", "training loss"),
    ("lr", "learning rate"),
    (None, "validation metric"),  # top1 or AP, whichever the runs have
    ("train_images_per_s", "training images/s"),
)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; ConfigError naming the extra when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "visualize.py needs matplotlib: pip install -e '.[plot]' (or pip install matplotlib)"
        ) from None
    return plt


# --- Checkpoint and image ----------------------------------------------------------------------------------------


def load_model(checkpoint: Path) -> tuple[torch.nn.Module, Any]:
    """The checkpoint's model in eval mode with the weights eval.py evaluates (the EMA's when it has them), rebuilt
    as eval.py rebuilds it (aaconv.runs.rebuild_run), and its run config."""
    from aaconv.runs import rebuild_run

    run = rebuild_run(checkpoint)
    return run.model.eval(), run.config


def model_input(model: torch.nn.Module, run_cfg: Any, path: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(the module to run, its (1, 3, H, W) input, the (3, H, W) picture in [0, 1] it shows) for image ``path``:
    a classifier's evaluation transform; a detector's backbone at the image's own size, normalised as the detector."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import to_tensor

    try:
        image = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path} ({e}); pass a PNG or JPEG file") from None
    if hasattr(model, "backbone") and hasattr(model, "transform"):  # a torchvision detector: its resize and padding
        x = model.transform([to_tensor(image)])[0].tensors
        mean, std = (torch.as_tensor(v)[:, None, None] for v in (model.transform.image_mean, model.transform.image_std))
        return model.backbone, x, (x[0] * std + mean).clamp(0, 1)
    data = OmegaConf.to_container(run_cfg.data)
    transform = data_format(data, "classification").eval_transform(data)
    x = transform(image)
    if x.dtype == torch.uint8:  # the ImageNet pipelines end in uint8 and are normalised on the device
        normalized = DeviceNormalize.from_options(data["transform"]["train"])(x[None], torch.device("cpu"))
        return model, normalized, x.float() / 255
    norm = next(t for t in transform.transforms if hasattr(t, "mean") and hasattr(t, "std"))  # CIFAR's
    mean, std = torch.as_tensor(norm.mean)[:, None, None], torch.as_tensor(norm.std)[:, None, None]
    return model, x[None], (x * std + mean).clamp(0, 1)


def parse_query(text: str) -> tuple[int, int]:
    """argparse type: "X,Y" -> (x, y) integer pixels."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"query {text!r} is not X,Y (two integer pixels, e.g. 16,10)") from None
    return x, y


# --- attention ---------------------------------------------------------------------------------------------------


def _mark(ax: Any, query: tuple[int, int]) -> None:
    ax.plot(*query, marker="x", color="cyan", markersize=8, mew=2)


def _image_axis(ax: Any, picture: torch.Tensor, title: str) -> None:
    ax.imshow(picture.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def plot_queries(plt: Any, maps: am.QueryMaps, picture: torch.Tensor) -> Any:
    """Rows: queries; columns: the image with the query, then each head's map over the image."""
    num_queries, num_heads = maps.maps.shape[:2]
    height, width = picture.shape[1:]
    fig, axes = plt.subplots(
        num_queries,
        num_heads + 1,
        figsize=(1.6 * (num_heads + 1) + 0.8, 1.75 * num_queries + 0.4),
        layout="constrained",
    )
    axes = axes.reshape(num_queries, num_heads + 1)
    gray = picture.mean(0).numpy()
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the map's cells stretched over the image's pixels
    top = float(maps.maps.max())  # one colour scale for every map, so heads and queries compare
    for qi, query in enumerate(maps.queries):
        _image_axis(axes[qi, 0], picture, f"query {qi + 1} at {query[0]},{query[1]}")
        _mark(axes[qi, 0], query)
        for head in range(num_heads):
            ax = axes[qi, head + 1]
            ax.imshow(gray, cmap="gray", extent=extent)
            prob = maps.maps[qi, head].numpy()
            shown = ax.imshow(prob, cmap="inferno", alpha=0.8, extent=extent, vmin=0, vmax=top)
            _mark(ax, query)
            ax.set_title(f"head {head + 1} (max {prob.max():.2f})", fontsize=8)
            ax.set_axis_off()
    fig.colorbar(shown, ax=axes, shrink=0.8, pad=0.01, label="attention probability")
    rows, cols = maps.maps.shape[-2:]
    fig.suptitle(f"attention of {maps.layer} over its {rows}x{cols} positions (each map sums to 1)", fontsize=10)
    return fig


def plot_aw(plt: Any, layers: dict[str, dict[str, torch.Tensor]], picture: torch.Tensor) -> Any:
    """Top: the image, then per map A's mean over input channels at each kernel offset; bottom: per map A's mean
    over offsets for each input channel."""
    (layer, numbers), *_ = layers.items()
    attention = numbers["attention"][0]  # (M, C_in, k, k)
    per_offset, per_channel = attention.mean(1).numpy(), attention.mean((2, 3)).numpy()
    num_maps = len(per_offset)
    fig, axes = plt.subplots(2, num_maps + 1, figsize=(2.3 * (num_maps + 1), 4.6), squeeze=False, layout="constrained")
    _image_axis(axes[0, 0], picture, "input")
    axes[1, 0].set_axis_off()
    low, high = float(per_offset.min()), float(per_offset.max())
    for m in range(num_maps):
        ax = axes[0, m + 1]
        ax.imshow(per_offset[m], cmap="viridis", vmin=low, vmax=high)
        for (i, j), value in np.ndenumerate(per_offset[m]):
            dark = value < (low + high) / 2  # viridis: dark below the middle of the scale
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_title(f"map {m + 1}: mean over input channels", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        bars = axes[1, m + 1]
        bars.stairs(per_channel[m], fill=True, color="tab:green")
        bars.set_title(f"map {m + 1}: mean over offsets", fontsize=8)
        bars.set_xlabel("input channel", fontsize=7)
        bars.tick_params(labelsize=6)
    k = per_offset.shape[-1]
    fig.suptitle(f"AW kernel attention A of {layer} ({num_maps} maps x C_in x {k}x{k}; W' = K * A + K)", fontsize=10)
    return fig


def plot_cbam(plt: Any, maps: dict[str, dict[str, torch.Tensor]], picture: torch.Tensor) -> Any:
    """Bands of up to four modules: the image (first band), then per module its spatial map over the image (top)
    and its channel gate's factors (bottom); one colour scale, [0, 1], for every spatial map."""
    per_band = min(4, len(maps))
    bands = -(-len(maps) // per_band)
    fig, axes = plt.subplots(
        2 * bands, per_band + 1, figsize=(2.4 * (per_band + 1), 2.2 * 2 * bands), squeeze=False, layout="constrained"
    )
    for ax in axes.flatten():
        ax.set_axis_off()
    _image_axis(axes[0, 0], picture, "input")
    height, width = picture.shape[1:]
    gray = picture.mean(0).numpy()
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the map's cells stretched over the image's pixels
    for index, (name, gates) in enumerate(maps.items()):
        band, col = divmod(index, per_band)
        top, bottom = axes[2 * band, col + 1], axes[2 * band + 1, col + 1]
        top.imshow(gray, cmap="gray", extent=extent)
        spatial, channel = gates["spatial"][0].numpy(), gates["channel"][0]
        shown = top.imshow(spatial, cmap="inferno", alpha=0.8, extent=extent, vmin=0, vmax=1)
        rows, cols = spatial.shape
        top.set_title(f"{name}\nspatial {rows}x{cols}, mean {spatial.mean():.2f}", fontsize=8)
        bottom.set_axis_on()
        bottom.stairs(channel.numpy(), fill=True, color="tab:blue")
        bottom.set_ylim(0, 1)
        bottom.set_title(f"{name}\nchannel gate, mean {channel.mean():.2f}", fontsize=8)
        bottom.set_xlabel("channel", fontsize=7)
        bottom.tick_params(labelsize=6)
    fig.colorbar(shown, ax=axes[:, 1:], shrink=0.6, pad=0.01, label="spatial gate")
    fig.suptitle(
        "CBAM: channel gate M_c (bars), then spatial gate M_s on the gated map (output = input x M_c x M_s)",
        fontsize=10,
    )
    return fig


def plot_gates(plt: Any, layers: dict[str, dict[str, torch.Tensor]], picture: torch.Tensor) -> Any:
    """The image, then one bar chart of per-channel factors per gate module."""
    gates = {name: numbers["factor"][0] for name, numbers in layers.items()}
    cols = min(4, len(gates) + 1)
    rows = -(-(len(gates) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.2 * rows), squeeze=False, layout="constrained")
    flat = axes.flatten()
    _image_axis(flat[0], picture, "input")
    for ax, (name, values) in zip(flat[1:], gates.items(), strict=False):
        ax.stairs(values.numpy(), fill=True, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(f"{name} (mean {values.nanmean():.2f})", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in flat[len(gates) + 1 :]:
        ax.set_axis_off()
    fig.suptitle("channel gates: each channel's factor (output = input x factor)", fontsize=10)
    return fig


def plot_numbers(plt: Any, layers: dict[str, dict[str, torch.Tensor]], picture: torch.Tensor) -> Any:
    """Any kind: the image, then per layer and number a heat map of its first image's values, averaged over leading
    dims down to two (a vector as bars)."""
    panels = [
        (f"{layer}: {key} {tuple(value.shape[1:])}", value[0].float())
        for layer, numbers in layers.items()
        for key, value in numbers.items()
    ]
    cols = min(4, len(panels) + 1)
    rows = -(-(len(panels) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.4 * rows), squeeze=False, layout="constrained")
    flat = axes.flatten()
    _image_axis(flat[0], picture, "input")
    for ax, (title, values) in zip(flat[1:], panels, strict=False):
        while values.dim() > 2:
            values = values.nanmean(0)
        if values.dim() == 2:
            ax.imshow(values.numpy(), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.stairs(values.reshape(-1).numpy(), fill=True, color="tab:blue")
            ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=8)
    for ax in flat[len(panels) + 1 :]:
        ax.set_axis_off()
    return fig


def plotter(kind: str) -> Any:
    """The picture of a layer kind that is not drawn per query (those get ``plot_queries``); ``plot_numbers`` for a
    kind without one of its own (a new part's)."""
    return {"aw": plot_aw, "cbam": plot_cbam, "gate": plot_gates}.get(kind, plot_numbers)


def attention_command(args: argparse.Namespace) -> Path:
    plt = pyplot()
    model, run_cfg = load_model(args.checkpoint)
    module, x, picture = model_input(model, run_cfg, args.image)
    layers = am.attention_layers(module)
    am.require_attention(layers, f"checkpoint {args.checkpoint}")
    drawings = am.drawings()
    if args.layer:
        kind = am.check_layer(layers, args.layer)
        names = [args.layer]
    else:
        kind = next(k for k in drawings if k in layers.values())
        names = [n for n, k in layers.items() if k == kind][: None if drawings[kind].together else 1]
    if args.query and not drawings[kind].per_query:
        raise ConfigError(
            f"--query applies to layers drawn per query only; {names[0]} is a {kind!r} layer "
            f"(such layers in this model: {', '.join(am.query_layers(layers)) or 'none'})"
        )
    try:
        fig = draw(plt, module, x, picture, kind, names, args.query)
    except ValueError as e:  # the layers' own checks (a map larger than AA's relative tables)
        raise ConfigError(f"the model cannot run on {args.image}: {first_line(e)}; pass a smaller image") from None
    out = args.out or args.checkpoint.with_name(f"attention_{names[0] if len(names) == 1 else kind}.png")
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)
    print(out)
    return out


def draw(
    plt: Any,
    module: torch.nn.Module,
    x: torch.Tensor,
    picture: torch.Tensor,
    kind: str,
    names: list[str],
    query: list[tuple[int, int]] | None,
) -> Any:
    """The figure of ``kind`` for layers ``names`` of ``module`` on input ``x`` (shown as ``picture``)."""
    if am.drawings()[kind].per_query:
        queries = query or [(picture.shape[2] // 2, picture.shape[1] // 2)]
        return plot_queries(plt, am.query_maps(module, x, names[0], queries), picture)
    return plotter(kind)(plt, am.read_layers(module, x, names), picture)


# --- curves ------------------------------------------------------------------------------------------------------


def find_curves(folders: Sequence[Path]) -> dict[Path, list[dict[str, Any]]]:
    """{run folder: its metrics.jsonl records} for every run under ``folders`` (DataError for a folder without)."""
    runs: dict[Path, list[dict[str, Any]]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"run folder {folder} does not exist; pass train.py's run or multirun folders")
        files = sorted(folder.rglob("metrics.jsonl"))
        if not files:
            raise DataError(f"no metrics.jsonl under {folder}; pass train.py's run or multirun folders")
        for path in files:
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            runs[path.parent] = [json.loads(line) for line in lines]
    return runs


def run_labels(folders: Sequence[Path]) -> dict[Path, str]:
    """Each run's Hydra overrides that not every run shares (all of them for one run), else its folder name."""
    overrides = {}
    for folder in folders:
        file = folder / ".hydra" / "overrides.yaml"
        overrides[folder] = [str(o) for o in OmegaConf.load(file)] if file.is_file() else []
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(folders) > 1 else set()
    return {f: " ".join(o for o in overrides[f] if o not in shared) or f.name for f in folders}


def curve_series(runs: dict[Path, list[dict[str, Any]]]) -> tuple[list[tuple[str, str]], dict[Path, dict[str, Any]]]:
    """The panels [(key, title)] and {run: {key: (epochs, values)}}; the metric panel is top1 or AP."""
    keys = {k for records in runs.values() for r in records for k in r}
    metric = next((k for k in ("top1", "AP") if k in keys), None)
    panels = [(key or metric, title if key else f"validation {metric}") for key, title in CURVES if key or metric]
    series = {
        folder: {
            key: ([r["epoch"] for r in records if key in r], [r[key] for r in records if key in r]) for key, _ in panels
        }
        for folder, records in runs.items()
    }
    return panels, series


def write_html(panels: list[tuple[str, str]], series: dict, labels: dict[Path, str], path: Path) -> bool:
    """The same curves as an interactive standalone page with plotly; False (nothing written) without plotly."""
    try:
        from plotly.subplots import make_subplots
    except ImportError:
        return False
    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for _, title in panels])
    fig.update_layout(height=700, width=1000)
    for index, (key, _) in enumerate(panels):
        for run, data in series.items():
            fig.add_scatter(
                x=data[key][0],
                y=data[key][1],
                mode="lines+markers",
                name=labels[run],
                legendgroup=labels[run],
                showlegend=index == 0,
                row=index // 2 + 1,
                col=index % 2 + 1,
            )
        fig.update_xaxes(title_text="epoch", row=index // 2 + 1, col=index % 2 + 1)
    fig.write_html(path, include_plotlyjs=True)
    return True


def plot_curves(plt: Any, panels: list[tuple[str, str]], series: dict, labels: dict[Path, str]) -> Any:
    """Four panels against epoch, one line per run, a shared legend of the runs' labels below."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flatten(), panels, strict=False):
        for run, data in series.items():
            ax.plot(*data[key], marker="o", markersize=3, label=labels[run])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in axes.flatten()[len(panels) :]:
        ax.set_axis_off()
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.035 * -(-len(names) // 3) + 0.01, 1, 1))
    return fig


def curves_command(args: argparse.Namespace) -> Path:
    plt = pyplot()
    runs = find_curves(args.runs)
    labels = run_labels(list(runs))
    panels, series = curve_series(runs)
    fig = plot_curves(plt, panels, series, labels)
    out = args.out or args.runs[0] / "curves.png"
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)
    print(out)
    html = out.with_suffix(".html")
    if write_html(panels, series, labels, html):
        print(html)
    else:
        print("no HTML page: it needs plotly (pip install plotly)", file=sys.stderr)
    return out


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    attention = commands.add_parser("attention", help="attention maps of one checkpoint on one image")
    attention.add_argument("checkpoint", type=Path, help="a run's last.pt or best.pt")
    attention.add_argument("--image", type=Path, required=True, help="a PNG / JPEG image")
    attention.add_argument(
        "--layer",
        help="module name of the layer to show (default: the first AA, else AW, else all CBAM modules, else all gates)",
    )
    attention.add_argument(
        "--query", type=parse_query, nargs="+", metavar="X,Y", help="AA query pixels of the image the model sees"
    )
    attention.add_argument("--out", type=Path, help="PNG to write (default: beside the checkpoint)")
    curves = commands.add_parser("curves", help="training curves of runs, overlaid")
    curves.add_argument("runs", type=Path, nargs="+", help="run folders or multirun folders")
    curves.add_argument("--out", type=Path, help="PNG to write (default: curves.png in the first folder)")
    for sub in (attention, curves):
        sub.add_argument("--dpi", type=positive_int, default=100, help="resolution of the PNG (default 100)")
    args = parser.parse_args(argv)
    return attention_command(args) if args.command == "attention" else curves_command(args)


if __name__ == "__main__":
    main()
