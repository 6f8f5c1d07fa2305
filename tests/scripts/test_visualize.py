"""scripts/visualize.py on tiny checkpoints and runs: the numbers each picture plots, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from aaconv.data.shapes import classification_sample
from aaconv.engine.checkpoint import save_checkpoint
from aaconv.layers import AWConv2d, SqueezeExcite
from aaconv.tasks import build_task
from helpers.config import REPO, TINY_OVERRIDES

pytest.importorskip("matplotlib")
SPEC = importlib.util.spec_from_file_location("visualize", REPO / "scripts" / "visualize.py")
visualize = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(visualize)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px image of the built-in shapes set (the classifier sees it resized to 32 px)."""
    path = tmp_path_factory.mktemp("image") / "shape.png"
    classification_sample(0, "val", 3, 64)[0].save(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Freshly initialised ResNet-18 checkpoints of the tiny shapes config per attention option, as train.py writes
    them."""
    from helpers.config import compose_config

    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for option in ("aa", "aw", "se", "cbam", "none"):
        # the quick start zero-initialises each block's last BN: an untrained SE would see only zeros
        cfg = compose_config(
            f"data.root={root}", *TINY_OVERRIDES, f"attention={option}", "backbone.zero_init_residual=false"
        )
        torch.manual_seed(0)
        model = build_task(cfg).build_model()
        config = OmegaConf.to_container(cfg, resolve=True)
        out[option] = save_checkpoint(
            {"model": model.state_dict(), "epoch": 1, "config": config}, root / option / "last.pt"
        )
    return out


def figures_of(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    """The figures visualize.<name> draws (the command closes them after saving)."""
    figures = []
    original = getattr(visualize, name)

    def keep(*args):
        figures.append(original(*args))
        return figures[-1]

    monkeypatch.setattr(visualize, name, keep)
    return figures


def run_main(*argv: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """main(argv) in-process: (exit status, stderr)."""
    try:
        visualize.main(list(argv))
        status = 0
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


@pytest.mark.slow
def test_aa_maps_sum_to_one_per_head_over_the_layers_positions(checkpoints, image, tmp_path, monkeypatch):
    figures = figures_of(monkeypatch, "plot_queries")
    out = tmp_path / "aa.png"
    visualize.main(
        ["attention", str(checkpoints["aa"]), "--image", str(image), "--query", "16,16", "3,28", "--out", str(out)]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [fig] = figures
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    assert len(heads) == 2 * 8  # 2 queries x ResNet-18's 8 heads
    for ax in heads:
        plotted = torch.as_tensor(ax.get_images()[1].get_array().data, dtype=torch.float64)
        assert plotted.shape == (2, 2)  # layer2.0.conv1: the 32 px input's 4x4 stride-8 map, memory-pooled 3x3/2
        assert (plotted >= 0).all() and plotted.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert fig.axes[0].get_title() == "query 1 at 16,16"


@pytest.mark.slow
def test_aw_view_plots_the_mean_kernel_attention_of_the_layer(checkpoints, image, tmp_path, monkeypatch):
    figures = figures_of(monkeypatch, "plot_aw")
    visualize.main(["attention", str(checkpoints["aw"]), "--image", str(image), "--out", str(tmp_path / "aw.png")])
    model, run_cfg = visualize.load_model(checkpoints["aw"])
    _, x, _ = visualize.model_input(model, run_cfg, image)
    layer = model.get_submodule("layer2.0.conv1")  # the first AW conv
    assert isinstance(layer, AWConv2d)
    inputs = []
    layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    with torch.no_grad():
        model(x)
        hidden = F.relu(F.conv2d(F.adaptive_avg_pool2d(inputs[0], 3), layer.fc1.weight, layer.fc1.bias))
        attention = torch.sigmoid(F.conv2d(hidden, layer.fc2.weight, layer.fc2.bias)).view(4, -1, 3, 3)
    [fig] = figures
    maps = [ax for ax in fig.axes if "mean over input channels" in ax.get_title()]
    assert len(maps) == 4
    for m, ax in enumerate(maps):
        plotted = torch.as_tensor(ax.get_images()[0].get_array().data)
        torch.testing.assert_close(plotted, attention[m].mean(0))


@pytest.mark.slow
def test_se_view_plots_every_gate_as_the_blocks_own_squeeze_excite(checkpoints, image, tmp_path, monkeypatch):
    figures = figures_of(monkeypatch, "plot_gates")
    visualize.main(["attention", str(checkpoints["se"]), "--image", str(image), "--out", str(tmp_path / "se.png")])
    model, run_cfg = visualize.load_model(checkpoints["se"])
    _, x, _ = visualize.model_input(model, run_cfg, image)
    gates = {}
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcite):
            module.register_forward_pre_hook(
                lambda m, args, name=name: gates.__setitem__(
                    name, torch.sigmoid(m.fc2(F.relu(m.fc1(args[0].mean((2, 3), keepdim=True))))).flatten()
                )
            )
    with torch.no_grad():
        model(x)
    [fig] = figures
    bars = {ax.get_title().split(" ")[0]: ax for ax in fig.axes if ax.patches}
    assert list(bars) == list(gates) and len(gates) == 8  # one SE per ResNet-18 block
    for name, ax in bars.items():
        [steps] = ax.patches  # one bar per channel, drawn as one step patch
        plotted = torch.as_tensor(steps.get_data().values)
        torch.testing.assert_close(plotted, gates[name], rtol=1e-4, atol=1e-5)


def test_cbam_view_plots_each_modules_channel_gate_and_spatial_map(checkpoints, image, tmp_path, monkeypatch):
    from aaconv.layers.cbam import CBAM

    figures = figures_of(monkeypatch, "plot_cbam")
    out = tmp_path / "cbam.png"
    visualize.main(["attention", str(checkpoints["cbam"]), "--image", str(image), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, run_cfg = visualize.load_model(checkpoints["cbam"])
    _, x, _ = visualize.model_input(model, run_cfg, image)
    expected = {}
    for name, module in model.named_modules():
        if isinstance(module, CBAM):  # the module's own gates, in its forward's order, on its input

            def record(m, args, out, name=name) -> None:
                channel = m.channel_gate(args[0])
                expected[name] = (channel.flatten(), m.spatial_gate(args[0] * channel)[0, 0], out.shape[-2:])

            module.register_forward_hook(record)
    with torch.no_grad():
        model(x)
    [fig] = figures
    spatial = {ax.get_title().split()[0]: ax for ax in fig.axes if "\nspatial " in ax.get_title()}
    channel = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.patches}
    assert list(spatial) == list(channel) == list(expected) and len(expected) == 8  # one per ResNet-18 block
    for name, (gate, space, size) in expected.items():
        [steps] = channel[name].patches
        torch.testing.assert_close(torch.as_tensor(steps.get_data().values), gate, rtol=1e-4, atol=1e-5)
        plotted = torch.as_tensor(spatial[name].get_images()[1].get_array().data)
        assert plotted.shape == size  # the block's output map, stretched over the image
        torch.testing.assert_close(plotted, space, rtol=1e-4, atol=1e-5)


def test_layer_names_one_cbam_module_and_the_default_shows_every_one(checkpoints, image, monkeypatch, capsys):
    figures = figures_of(monkeypatch, "plot_cbam")
    folder = checkpoints["cbam"].parent
    for extra, picture in (
        (["--layer", "layer3.1.post_attention"], "attention_layer3.1.post_attention.png"),
        ([], "attention_cbam.png"),
    ):
        status, _ = run_main("attention", str(checkpoints["cbam"]), "--image", str(image), *extra, capsys=capsys)
        assert status == 0 and (folder / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one, every = figures
    spatial = [ax.get_title() for ax in one.axes if "\nspatial " in ax.get_title()]
    assert len(spatial) == 1 and spatial[0].startswith(
        "layer3.1.post_attention\nspatial 2x2,"
    )  # 32 px input, stride 16
    assert sum("\nspatial " in ax.get_title() for ax in every.axes) == 8


class Scale(torch.nn.Module):
    """A layer of a part visualize.py has no picture for: y = x * s, one factor per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.linspace(0.5, 2.0, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[:, None, None]


def test_a_kind_without_its_own_picture_is_drawn_from_its_numbers(monkeypatch):
    from aaconv.layers import parts
    from aaconv.layers.parts import _PARTS, AttentionPart, Drawing, PartOptions

    def read(module, x, y):
        return {"scale": module.scale.expand(len(x), -1), "energy": (y * y).mean(1)}

    parts()
    drawing = Drawing(kind="scale", read=read)
    part = AttentionPart("scale", "post", PartOptions, lambda options: Scale, (Scale,), drawing=drawing)
    monkeypatch.setitem(_PARTS.entries, "scale", part)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Scale(4))
    x = torch.randn(1, 3, 6, 5)
    fig = visualize.draw(visualize.pyplot(), model, x, torch.rand(3, 6, 5), "scale", ["1"], None)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["input", "1: scale (4,)", "1: energy (6, 5)"]
    [steps] = panels["1: scale (4,)"].patches
    torch.testing.assert_close(torch.as_tensor(steps.get_data().values), model[1].scale.detach())
    energy = torch.as_tensor(panels["1: energy (6, 5)"].get_images()[0].get_array().data)
    torch.testing.assert_close(energy, (model(x) ** 2).mean(1)[0].detach())


@pytest.mark.parametrize(
    ("option", "extra", "message"),
    [
        (
            "none",
            [],
            r"checkpoint .* has no attention layers .*; valid checkpoints are those trained with attention=se, cbam, "
            r"aa, aw, aa_se, aa_cbam, aw_se, aw_cbam, aw_aa, aw_aa_se or aw_aa_cbam$",
        ),
        (
            "aa",
            ["--layer", "layer9"],
            r"no attention layer 'layer9' in this model; valid layers: layer2.0.conv1, layer2.1.conv1, layer3.0.conv1",
        ),
        (
            "aa",
            ["--query", "40,3"],
            r"query 40,3 is outside the 32x32 image the model sees; valid queries are X,Y with X in 0..31 and Y in 0..31",
        ),
        (
            "se",
            ["--query", "3,3"],
            r"--query applies to layers drawn per query only; layer1.0.post_attention is a 'gate' layer \(such layers in this model: "
            r"none\)$",
        ),
        (
            "cbam",
            ["--layer", "layer1.0.conv1"],
            r"no attention layer 'layer1.0.conv1' in this model; valid layers: layer1.0.post_attention, layer1.1.post_attention, layer2.0.post_attention",
        ),
    ],
)
def test_bad_input_is_one_line_listing_what_is_valid(checkpoints, image, tmp_path, capsys, option, extra, message):
    status, err = run_main(
        "attention",
        str(checkpoints[option]),
        "--image",
        str(image),
        *extra,
        "--out",
        str(tmp_path / "x.png"),
        capsys=capsys,
    )
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert re.match(f"error: {message}", err), err
    assert not (tmp_path / "x.png").exists()


def test_an_unreadable_image_is_one_line(checkpoints, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    status, err = run_main("attention", str(checkpoints["aa"]), "--image", str(tmp_path / "bad.png"), capsys=capsys)
    assert status == 2 and err.startswith("error: cannot read image") and len(err.strip().splitlines()) == 1


def test_without_matplotlib_the_commands_stop_naming_the_extra(checkpoints, image, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    for argv in (["attention", str(checkpoints["aa"]), "--image", str(image)], ["curves", str(tmp_path)]):
        status, err = run_main(*argv, capsys=capsys)
        assert (
            status == 2
            and err == "error: visualize.py needs matplotlib: pip install -e '.[plot]' (or pip install matplotlib)\n"
        )


def write_run(folder: Path, overrides: list[str], records: list[dict]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_curves_label_runs_by_the_overrides_that_differ(tmp_path, monkeypatch, capsys):
    for i, option in enumerate(("none", "aa")):
        records = [
            {
                "epoch": e,
                "lr": 0.1 / e,
                "train_loss": 2.0 - e * (i + 1) / 4,
                "top1": 20.0 * e,
                "train_images_per_s": 300.0 + i,
            }
            for e in (1, 2, 3)
        ]
        write_run(tmp_path / "sweep" / f"{i}_attention={option}", ["trainer.epochs=3", f"attention={option}"], records)
    monkeypatch.setitem(sys.modules, "plotly", None)  # plotly missing: PNG only, and a line saying why
    figures = figures_of(monkeypatch, "plot_curves")
    status, err = run_main("curves", str(tmp_path / "sweep"), capsys=capsys)
    assert status == 0 and (tmp_path / "sweep" / "curves.png").is_file()
    assert (
        err == "no HTML page: it needs plotly (pip install plotly)\n"
        and not (tmp_path / "sweep" / "curves.html").exists()
    )
    [fig] = figures
    titles = [ax.get_title() for ax in fig.axes if ax.lines]
    assert titles == ["training loss", "learning rate", "validation top1", "training images/s"]
    loss = fig.axes[0]
    assert [line.get_label() for line in loss.lines] == ["attention=none", "attention=aa"]
    assert list(loss.lines[1].get_ydata()) == [1.5, 1.0, 0.5]


def test_curves_of_a_folder_without_runs_is_one_line(tmp_path, capsys):
    status, err = run_main("curves", str(tmp_path), capsys=capsys)
    assert status == 2 and err == f"error: no metrics.jsonl under {tmp_path}; pass train.py's run or multirun folders\n"


def test_curves_html_page_with_plotly(tmp_path, capsys):
    pytest.importorskip("plotly")
    write_run(tmp_path / "run", [], [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "AP": 0.3, "train_images_per_s": 9.0}])
    status, _ = run_main("curves", str(tmp_path / "run"), capsys=capsys)
    page = (tmp_path / "run" / "curves.html").read_text()
    assert status == 0 and "validation AP" in page and "plotly" in page


def entry(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "AACONV_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_start_sweep_then_its_curves_and_the_aa_checkpoints_maps(tmp_path, image, monkeypatch, capsys):
    sweep = tmp_path / "multirun"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("trainer.epochs=")]
    trained = entry(
        str(REPO / "train.py"),
        "-m",
        "attention=none,aa",
        *tiny,
        "trainer.epochs=2",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job${hydra.job.num}",  # the default names every override: too long a folder name
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    figures = figures_of(monkeypatch, "plot_curves")
    status, _ = run_main("curves", str(sweep), "--out", str(tmp_path / "curves.png"), capsys=capsys)
    assert status == 0 and (tmp_path / "curves.png").is_file()
    [fig] = figures
    for ax in fig.axes[:4]:  # every job in every panel, one point per epoch
        assert [line.get_label() for line in ax.lines] == ["attention=none", "attention=aa"]
        assert all(list(line.get_xdata()) == [1, 2] for line in ax.lines)
    visualize.main(["attention", str(sweep / "job1" / "last.pt"), "--image", str(image)])
    picture = sweep / "job1" / "attention_layer2.0.conv1.png"
    assert capsys.readouterr().out.strip() == str(picture) and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
