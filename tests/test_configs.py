"""Every option of every config group composes with the defaults, and interpolations resolve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers.config import CONFIGS, REPO

GROUP_OPTIONS = sorted(  # experiment/paper/x.yaml is the option paper/x of the group experiment
    ("experiment", str(path.relative_to(CONFIGS / "experiment").with_suffix("")))
    if path.is_relative_to(CONFIGS / "experiment")
    else (str(path.parent.relative_to(CONFIGS)), path.stem)
    for path in CONFIGS.rglob("*.yaml")
    if path.parent != CONFIGS
)


def test_the_tree_has_every_group() -> None:
    groups = {group.split("/")[0] for group, _ in GROUP_OPTIONS}
    expected = {"backbone", "attention", "task", "data", "optim", "schedule", "trainer", "logger", "experiment"}
    assert expected <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_option_composes_with_defaults(group: str, option: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}"], return_hydra_config=group.startswith("hydra"))
    container = OmegaConf.to_container(cfg, resolve=not group.startswith("hydra"), throw_on_missing=False)
    assert container["backbone"]["name"] and container["attention"]["variant"]
    if group not in ("experiment", "hydra/launcher", "hydra/sweeper"):  # those write into other groups' keys
        assert cfg[group] is not None


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_entry_point_configs_compose(config_name: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name)
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


# --- The command line wins ------------------------------------------------------------------------------------

OPTION_GROUPS = ("backbone", "attention", "task", "data", "optim", "schedule", "logger")
EXPERIMENTS = sorted(option for group, option in GROUP_OPTIONS if group == "experiment")
RECIPE_GROUPS = ("optim", "schedule")  # an experiment picks these as options, never sets their values


def options_of(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def own_values(group: str, option: str) -> dict:
    """The option's file, flattened to {"a.b": value}, unresolved."""
    content = OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{option}.yaml"), resolve=False)
    content.pop("defaults", None)
    return flatten(content)


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def pinned(experiment: str) -> dict[str, set[str]]:
    """{group: keys} an experiment sets as plain values (not through an option), from its file."""
    content = OmegaConf.to_container(OmegaConf.load(CONFIGS / "experiment" / f"{experiment}.yaml"), resolve=False)
    return {group: set(flatten(content[group])) for group in OPTION_GROUPS if isinstance(content.get(group), dict)}


def assert_carries(cfg, group: str, option: str, allowed: set[str] = frozenset()) -> None:
    composed = flatten(OmegaConf.to_container(cfg[group], resolve=False))
    own = own_values(group, option)
    wrong = {k: (composed.get(k), v) for k, v in own.items() if k not in allowed and composed.get(k) != v}
    assert not wrong, f"{group}={option}: composed (got, option's own) differ: {wrong}"


@pytest.mark.parametrize("group", OPTION_GROUPS)
def test_every_option_chosen_on_the_command_line_carries_its_own_values(group: str) -> None:
    """Under the default experiment (quickstart), `group=option` gives exactly that option's values, except
    the keys quickstart documents as pinned (backbone.zero_init_residual)."""
    allowed = pinned("quickstart").get(group, set())
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for option in options_of(group):
            assert_carries(compose("train", overrides=[f"{group}={option}"]), group, option, allowed)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_leave_the_command_line_in_charge(experiment: str) -> None:
    """Under every experiment, other options of every group (one composition per experiment, rotating through
    the options so that all are covered) carry their own values; recipes are options, not values, and every
    value an experiment pins is declared in its comments."""
    pins = pinned(experiment)
    assert not set(pins) & set(RECIPE_GROUPS), f"{experiment} sets {sorted(pins)} values: make the recipe an option"
    if pins:
        assert "pinned" in (CONFIGS / "experiment" / f"{experiment}.yaml").read_text().lower()
    index = EXPERIMENTS.index(experiment)
    choices = {group: options_of(group)[index % len(options_of(group))] for group in OPTION_GROUPS}
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *(f"{g}={o}" for g, o in choices.items())])
    for group, option in choices.items():
        assert_carries(cfg, group, option, pins.get(group, set()))


def test_a_command_line_key_beats_an_experiments_pin() -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=paper/imagenet_resnet50_aa_full",
                "attention.aa.kappa=0.3",
                "backbone.zero_init_residual=true",
                "optim=adamw",
                "optim.lr=0.5",
            ],
        )
    assert cfg.attention.aa.kappa == 0.3 and cfg.attention.aa.upsilon == 1.0 and cfg.backbone.zero_init_residual
    assert cfg.optim.opt == "adamw" and cfg.optim.lr == 0.5 and cfg.optim.weight_decay == 0.05


def test_cfg_job_shows_the_chosen_optimizers_values() -> None:
    """`python train.py optim=adamw --cfg job` prints AdamW's own values (not the quick start's SGD)."""
    shown = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "optim=adamw", "--cfg", "job"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    optim = OmegaConf.create(shown).optim
    assert OmegaConf.to_container(optim) == OmegaConf.to_container(OmegaConf.load(CONFIGS / "optim" / "adamw.yaml"))


def test_quickstart_recipe_is_refused_on_real_data(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "backbone=resnet50",
            "data=imagenet",
            f"data.root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "experiment=quickstart is the 10-epoch recipe for the built-in data, not for data=imagenet" in result.stderr


# --- Paper rows -------------------------------------------------------------------------------------------------

PAPER_ROWS = [name for name in EXPERIMENTS if name.startswith("paper/")]
# Small inputs and few classes keep the ~45 builds at about a minute; the architecture is the row's own.
TINY_INPUT = {
    "imagenet": ["data.image_size=32", "data.num_classes=10"],
    "cifar100": ["data.num_classes=10"],
    "coco": [
        "data.num_classes=5",
        "data.detection.min_size=64",
        "data.detection.max_size=64",
        "backbone.weights=null",
    ],
}


def test_every_table_row_has_an_experiment() -> None:
    rows = {name.removeprefix("paper/") for name in PAPER_ROWS}
    resnets = {f"imagenet_resnet{d}_{a}" for d in (34, 50, 101, 152) for a in ("none", "se", "aa")}
    aw = {"imagenet_resnet50_aw", "imagenet_resnet50_aw_se", "imagenet_resnet50_aw_aa", "imagenet_resnet101_aw"}
    mnasnet = {f"imagenet_mnasnet_a1_{w}_{a}" for w in ("075", "100", "125", "140") for a in ("none", "aa")}
    ablation = {f"imagenet_resnet50_aa_pos_{p}" for p in ("none", "sine", "coordconv", "relative")}
    coco = {f"coco_retinanet_resnet{d}_{a}" for d in (50, 101) for a in ("none", "se", "aa")}
    coco |= {f"coco_faster_rcnn_resnet{d}_{a}" for d in (50, 101) for a in ("none", "aw", "aw_se")}
    cifar = {f"cifar100_wrn28_10_{a}" for a in ("none", "se", "aa")}
    assert resnets | aw | mnasnet | ablation | coco | cifar | {"imagenet_resnet50_aa_full"} <= rows


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_row_composes_and_builds_its_model(row: str) -> None:
    """Each row composes with nothing but data.root and builds its own architecture (at a tiny input)."""
    from aaconv.engine.config_checks import check_config
    from aaconv.layers import AAConv2d
    from aaconv.tasks import build_task

    data = OmegaConf.load(CONFIGS / "experiment" / f"{row}.yaml")["defaults"]
    dataset = next(d["override /data"] for d in data if "override /data" in d)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={row}", "data.root=/data", *TINY_INPUT[dataset]])
    choices = {k.removeprefix("override /"): v for d in data for k, v in d.items()}
    assert cfg.backbone == OmegaConf.load(CONFIGS / "backbone" / f"{choices['backbone']}.yaml")
    assert cfg.attention.variant == OmegaConf.load(CONFIGS / "attention" / f"{choices['attention']}.yaml").variant
    check_config(cfg)  # train.py's up-front checks accept the row as shipped
    model = build_task(cfg).build_model().eval()
    size = 64 if dataset == "coco" else cfg.data.image_size
    with torch.no_grad():
        out = model([torch.rand(3, size, size)]) if dataset == "coco" else model(torch.rand(1, 3, size, size))
    if dataset != "coco":
        assert out.shape == (1, cfg.data.num_classes)
    else:
        assert set(out[0]) == {"boxes", "scores", "labels"}
    if row.endswith("_full"):
        assert all(m.conv is None for m in model.modules() if isinstance(m, AAConv2d)), "kappa = upsilon = 1"


@pytest.mark.parametrize("row", [row for row in PAPER_ROWS if row.startswith("paper/coco")])
def test_coco_rows_start_from_imagenet_weights(row: str) -> None:
    """The detection task receives the row's ImageNet initialisation: torchvision's weights for the baselines;
    the attention rows refuse to start until backbone.weights names their ImageNet run."""
    from aaconv.errors import ConfigError, require_values
    from aaconv.tasks import build_task

    overrides = [f"experiment={row}", "data.root=/data"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        if row.endswith("_none"):
            expected = f"torchvision:{cfg.backbone.name}"
        else:
            with pytest.raises(ConfigError, match=r"not set: backbone.weights; add backbone.weights=\.\.\. to"):
                require_values(cfg)
            expected = "/runs/imagenet/last.pt"
            cfg = compose("train", overrides=[*overrides, f"backbone.weights={expected}"])
    require_values(cfg)
    assert build_task(cfg).backbone["weights"] == expected
