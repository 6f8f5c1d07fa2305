"""scripts/benchmark.py at a tiny size: its JSON, ratios and peers (timings themselves are not asserted)."""

import importlib.util
import json
import sys

import pytest

from aaconv.layers import parse_variant
from aaconv.runs import config_options
from helpers.config import REPO, TINY_SHAPES

spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
benchmark = sys.modules["benchmark"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

TINY = ["--batch", "2", "--image-size", "32", "--warmup", "1", "--repeats", "2", "--threads", "1"]


def test_classification_rows_peers_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    result = benchmark.main(["--models", "resnet50:se", "resnet18:aw", *TINY, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {row["model"]: row for row in result["models"]}
    # resnet18:none is added for the attention row; timm's seresnet50 is the peer of resnet50:se
    assert list(rows) == ["resnet18:none", "timm:seresnet50", "resnet50:se", "resnet18:aw"]
    assert rows["resnet50:se"]["baseline"] == "timm:seresnet50" and rows["resnet18:aw"]["baseline"] == "resnet18:none"
    assert rows["timm:seresnet50"]["params_m"] == pytest.approx(rows["resnet50:se"]["params_m"])
    assert rows["resnet18:none"]["baseline"] is None and "train_ratio" not in rows["resnet18:none"]
    for row in rows.values():
        for mode in ("train", "infer"):
            assert len(row[f"{mode}_seconds"]) == 2 and row[f"{mode}_images_per_s"] > 0
            assert row[f"peak_{mode}_mib"] is not None
        base = rows.get(row["baseline"] or "")
        if base:
            assert row["train_ratio"] == pytest.approx(row["train_images_per_s"] / base["train_images_per_s"])
    assert json.loads(out.read_text())["settings"]["image_size"] == [32, 32]


def test_config_overrides_reach_the_model():
    entries = benchmark.build_entries(
        benchmark.parse_args(
            [
                "--models",
                "resnet18:aa",
                "--no-peers",
                "--set",
                "attention.aa.impl=reference",
                "attention.aa.num_heads=4",
                *TINY,
            ]
        ),
        benchmark.torch.device("cpu"),
    )
    layers = [m for m in entries[-1].model.modules() if type(m).__name__ == "AAConv2d"]
    assert layers and all(m.impl == "reference" and m.attention.num_heads == 4 for m in layers)


@pytest.mark.parametrize("option", config_options("attention"))
@pytest.mark.parametrize("task", ["classification", "retinanet"])
def test_every_attention_option_builds_through_the_model_builder(option, task):
    """Every configs/attention option (composed ones, whose YAMLs have defaults lists, included) builds the model its
    composed config describes, each part of its variant present (a ResNet-50 at 64 px, on the meta device)."""
    cfg = benchmark.benchmark_config(f"resnet50:{option}", task, (64, 64), [])
    with benchmark.torch.device("meta"):
        model = benchmark.build_ours(f"resnet50:{option}", task, (64, 64), [])
    found = {type(m) for m in model.modules()}
    for part in parse_variant(cfg.attention.variant):
        assert found & set(part.modules), f"{option}: no {part.name} module in the model"
    assert (task == "classification") == (model.__class__.__name__ == "ResNet")


def test_retinanet_against_torchvision():
    result = benchmark.main(
        [
            "--task",
            "retinanet",
            "--models",
            "resnet50:none",
            "--batch",
            "1",
            "--image-size",
            "64x96",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--modes",
            "train",
            "--threads",
            "1",
        ]
    )
    peer, ours = result["models"]
    assert peer["model"] == "torchvision:retinanet_resnet50_fpn" and ours["baseline"] == peer["model"]
    assert ours["params_m"] == pytest.approx(peer["params_m"])
    assert ours["train_images_per_s"] > 0 and "infer_images_per_s" not in ours


def test_timm_peers_by_name_against_our_attention_row():
    """--peers adds timm models built for the image size, each against our first attention row, with GFLOPs
    counted on a meta-device copy (equal to a count on the real model); a peer that cannot take the size (HaloNet's
    8x8 blocks on a 2x2 map) is a row with its error."""
    import timm

    from aaconv.models.cost import count_flops

    argv = ["--models", "resnet18:aa", "--no-peers", "--peers", "botnet26t_256", "halonet26t", "--modes", "train"]
    result = benchmark.main([*argv, *TINY, "--repeats", "1"])
    rows = {row["model"]: row for row in result["models"]}
    assert list(rows) == ["resnet18:none", "resnet18:aa", "timm:botnet26t_256", "timm:halonet26t"]
    botnet = rows["timm:botnet26t_256"]
    assert botnet["baseline"] == "resnet18:aa" and botnet["train_ratio"] > 0 and botnet["error"] is None
    real = timm.create_model("botnet26t_256", num_classes=1000, img_size=(32, 32))
    assert botnet["gflops"] == pytest.approx(count_flops(real, 32, 32) / 1e9)
    assert botnet["params_m"] == pytest.approx(sum(p.numel() for p in real.parameters()) / 1e6)
    assert rows["timm:halonet26t"]["error"].startswith("cannot run at 32x32 px")
    assert rows["resnet18:aa"]["gflops"] > rows["resnet18:none"]["gflops"] > 0


def test_loader_mode_on_the_shapes_set(data_cache):
    sets = [f"data.root={data_cache}"] + [f"data.generate.{k}={v}" for k, v in TINY_SHAPES.items()]
    result = benchmark.main(
        [
            "--models",
            "--loader",
            "--data",
            "shapes",
            "--set",
            *sets,
            "--batch",
            "8",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--decode",
            "pil",
            "gpu",
            "--loader-batches",
            "2",
            "--repeats",
            "1",
            "--input",
            *benchmark.LOADER_INPUTS,
        ]
    )
    rows = result["loader"]["workers"]
    assert [(row["decode"], row["workers"]) for row in rows] == [("pil", 0), ("gpu", 0)]
    assert all(row["images_per_s"] > 0 for row in rows) and "models" not in result
    per_worker = result["loader"]["per_worker"]
    pipelines = [(kind, pipeline) for kind in benchmark.LOADER_INPUTS for pipeline in ("train", "val")]
    assert [(row["input"], row["pipeline"]) for row in per_worker] == pipelines
    for row in per_worker:
        assert len(row["aaconv_rounds"]) == len(row["timm_rounds"]) == 1
        assert row["ratio"] == pytest.approx(row["aaconv_images_per_s"] / row["timm_images_per_s"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "--batch: expected an integer > 0, got '0'"),
        (["--batch", "-1"], "--batch: expected an integer > 0, got '-1'"),
        (["--image-size", "7"], "--image-size: expected N or HxW with sides >= 32"),
        (["--image-size", "0x64"], "--image-size: expected N or HxW with sides >= 32"),
        (["--device", "tpu"], "--device: 'tpu' is not a device"),
        (["--cpu-allocator", "jemalloc"], "--cpu-allocator: invalid choice: 'jemalloc' (choose from"),
    ],
)
def test_bad_arguments_are_argparses_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "resnet51:aa"], "error: no backbone option 'resnet51' in --models; available: "),
        (["--models", "resnet50:xx"], "error: no attention option 'xx' in --models; available: "),
        (["--models", "--loader"], "error: --loader with --data imagenet needs --data-root DIR"),
        (["--models", "resnet18:none", "--image-size", "32x64"], "error: classification takes a square --image-size"),
        (["--models", "resnet18:aa", "--peers", "botnet27"], "error: no timm model 'botnet27' in --peers; e.g. "),
        (
            ["--models", "resnet18:aa", "--set", "attention.aa.imp=reference"],
            "error: --set attention.aa.imp=reference: no model of --models has the key attention.aa.imp",
        ),
        (["--models", "resnet18:aa", "--set", "attention=aw"], "error: --set attention=aw: --set takes keys"),
    ],
)
def test_bad_choices_are_one_line_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main([*argv, "--no-peers", "--repeats", "1", "--warmup", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(message) and "\n" not in err
