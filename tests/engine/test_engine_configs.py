"""Every engine config option composes and builds; optimiser, schedule, augmentation and mixup wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from aaconv.data.transforms import classification_transform
from aaconv.engine.optim import create_optimizer, scaled_lr
from aaconv.errors import AAConvError
from aaconv.tasks import build_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


@pytest.mark.parametrize("optim", options("optim"))
def test_every_optimizer_config_builds_with_the_scaled_lr(tiny_config, optim: str):
    cfg = tiny_config("~experiment", f"optim={optim}")  # quickstart sets its own opt/lr
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    optimizer = instantiate(cfg.optim, model, 2 * cfg.optim.lr_base_batch)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2 * cfg.optim.lr)
    decays = {len(g["params"]): g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {
        4: 0.0,
        2: cfg.optim.weight_decay,
    }  # norm weights and all biases: no decay; conv/linear weights: decay


@pytest.mark.parametrize("schedule", options("schedule"))
def test_every_schedule_config_steps_per_iteration(tiny_config, schedule: str):
    cfg = tiny_config("~experiment", f"schedule={schedule}")
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = instantiate(cfg.schedule, optimizer, epochs=100, steps_per_epoch=10)
    lrs = []
    for step in range(1, 1001):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) <= 1.0 + 1e-9 and lrs[-1] < 0.5 and len(set(lrs)) > 2


def test_multistep_decays_at_milestone_epochs():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = instantiate(
        {"_target_": "aaconv.engine.optim.multistep_schedule", "milestones": [2, 3]},
        optimizer,
        epochs=4,
        steps_per_epoch=5,
    )
    lrs = []
    for step in (9, 10, 14, 15):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01])  # update 10 (0-based) opens epoch 2


@pytest.mark.parametrize(
    "overrides",
    [[f"trainer.precision={p}" for p in ("fp32", "bf16", "fp16")][i : i + 1] for i in range(3)]
    + [[f"logger={name}"] for name in options("logger")]
    + [
        ["hydra/launcher=slurm"],
        ["hydra/launcher=submitit_local"],
        [
            "trainer.ema.enabled=true",
            "trainer.compile=true",
            "trainer.sync_bn=true",
            "trainer.channels_last=true",
            "trainer.accum_steps=4",
            "trainer.clip_grad_norm=1.0",
        ],
    ],
)
def test_feature_configs_compose(tiny_config, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.trainer.epochs > 0 and cfg.logger.name
    if overrides[0].startswith("hydra/launcher=slurm"):
        assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 8


def test_lr_scaling_rule():
    assert scaled_lr(0.1, 1024, 256) == pytest.approx(0.4)


def test_lars_scales_each_weight_step_by_its_trust_ratio(tiny_config):
    """One step of configs/optim/lars.yaml against You et al. 2017's rule, computed by hand: a weight moves by
    lr * trust_coeff * ||w|| / (||g|| + wd ||w||) * (g + wd w); a bias (no weight decay) by plain lr * g."""
    cfg = tiny_config("~experiment", "optim=lars")
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    model.weight.grad, model.bias.grad = torch.randn(4, 8), torch.randn(4)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    optimizer = instantiate(cfg.optim, model, cfg.optim.lr_base_batch)
    optimizer.step()
    wd, lr = cfg.optim.weight_decay, cfg.optim.lr
    g = model.weight.grad
    trust = cfg.optim.trust_coeff * weight.norm() / (g.norm() + wd * weight.norm())
    torch.testing.assert_close(model.weight.detach(), weight - lr * trust * (g + wd * weight))
    torch.testing.assert_close(model.bias.detach(), bias - lr * model.bias.grad)


def test_apex_optimizer_without_apex_is_a_clear_error():
    with pytest.raises(AAConvError, match="apex is not installed.*optim.opt=lamb"):
        create_optimizer(small_model(), 256, opt="fusedlamb", lr=1e-3)


def test_randaugment_and_random_erasing_compose_and_build(tiny_config):
    cfg = tiny_config("+data.transform.train.auto_augment=rand-m9-mstd0.5", "+data.transform.train.re_prob=0.25")
    transform = classification_transform(32, True, cfg.data.transform.train)
    names = repr(transform)
    assert "RandAugment" in names and "RandomErasing" in names
    from PIL import Image

    assert transform(Image.new("RGB", (40, 40), (200, 10, 10))).shape == (3, 32, 32)


def test_mixup_turns_targets_soft_and_trains(tiny_config):
    cfg = tiny_config("task.mixup.mixup_alpha=0.2", "task.mixup.cutmix_alpha=1.0")
    task = build_task(cfg)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    images, targets = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, count = task.training_loss(model, (images, targets), torch.device("cpu"))
    loss.backward()
    assert count == 4 and torch.isfinite(loss)
    assert type(task.criterion).__name__ == "SoftTargetCrossEntropy"
    assert build_task(tiny_config()).mixup is None  # off by default
