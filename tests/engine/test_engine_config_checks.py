"""Bad config values stop before training with one line that quotes the value as typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aaconv.engine.config_checks import EVAL_CHECKS, build_model, check_config
from aaconv.engine.runtime import select_device
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError
from aaconv.tasks import build_task
from helpers.config import compose_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0 is not valid: it must be a positive integer"),
        ("data.batch_size=3.5", "data.batch_size=3.5 is not valid: it must be a positive integer"),
        ("trainer.epochs=abc", "trainer.epochs=abc is not valid: it must be a positive integer"),
        ("trainer.epochs=0", "trainer.epochs=0 is not valid: it must be a positive integer"),
        ("trainer.epochs=true", "trainer.epochs=True is not valid: it must be a positive integer"),
        ("optim.lr=-1", "optim.lr=-1 is not valid: it must be a number > 0"),  # as typed, not scaled by the batch
        ("data.workers=-2", "data.workers=-2 is not valid: it must be an integer >= 0"),
        ("trainer.clip_grad_norm=0", "trainer.clip_grad_norm=0 is not valid: it must be a number > 0, or null"),
        ("backbone.attention_stages=5", "backbone.attention_stages=5 is not valid: it must be a list of stage numbers"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is not valid: it must be a positive integer, or null"),
        (
            "trainer.max_eval_batches=1.5",
            "trainer.max_eval_batches=1.5 is not valid: it must be a positive integer, or null",
        ),
        ("seed=abc", "seed=abc is not valid: it must be an integer"),
        ("data.decode=cuda", "data.decode=cuda is not valid: it must be cpu or gpu"),
        ("data.aug_repeats=-1", "data.aug_repeats=-1 is not valid: it must be an integer >= 0"),
        ("data.aug_repeats=1.5", "data.aug_repeats=1.5 is not valid: it must be an integer >= 0"),
        ("data.eval_image_size=0", "data.eval_image_size=0 is not valid: it must be a positive integer, or null"),
        ("data.crop_pct=0", "data.crop_pct=0 is not valid: it must be a number in (0, 1]"),
        ("data.crop_pct=1.2", "data.crop_pct=1.2 is not valid: it must be a number in (0, 1]"),
        ("trainer.cpu_allocator=jemalloc", "trainer.cpu_allocator=jemalloc is not valid: it must be tuned or default"),
        ("trainer.resume=sometimes", "trainer.resume=sometimes is not valid: it must be auto, never, or the path"),
    ],
)
def test_bad_values_are_named_as_typed(tiny_config, override: str, message: str):
    with pytest.raises(ConfigError) as error:
        check_config(tiny_config(override))
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.detection.min_size=0",
            "data.detection.min_size=0 is not valid: it must be a positive integer or a list",
        ),
        ("data.detection.min_size=[64,0]", r"data.detection.min_size=\[64, 0\] is not valid"),
        ("data.detection.hflip=2", r"data.detection.hflip=2 is not valid: it must be a number in \[0, 1\]"),
    ],
)
def test_bad_detection_values_are_named_as_typed(tiny_config, override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        check_config(tiny_config("task=retinanet", "data=shapes_det", override))
    check_config(tiny_config("task=retinanet", "data=shapes_det", "data.detection.min_size=[48,64]"))


def test_zero_heads_are_caught_before_the_model_divides_by_them(tiny_config):
    with pytest.raises(ConfigError, match=r"attention.aa.num_heads=0 is not valid"):
        check_config(tiny_config("attention=aa", "attention.aa.num_heads=0"))


def test_the_quickstart_and_every_attention_pass(tiny_config):
    options = sorted(path.stem for path in (Path(__file__).parents[2] / "configs" / "attention").glob("*.yaml"))
    assert "none" in options and "aa" in options
    for attention in options:
        check_config(tiny_config(f"attention={attention}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attention.variant=aa+bam", r"unknown attention part 'bam'; valid parts: aa, aw, se"),
        ("attention.variant=aa+aa", "combines aa and aa, both wrap parts"),
        ("attention.aa.basic_block_convs=[0]", r"attention.aa.basic_block_convs=\(0,\) is not valid"),
        ("attention.aa.impl=3", r"attention.aa.impl=3 is not valid: it must be a string, or null"),
    ],
)
def test_attention_mistakes_are_one_line_from_their_part(tiny_config, override: str, message: str):
    with pytest.raises(ConfigError, match=message) as info:
        check_config(tiny_config("attention=aa", override))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("backbone.attention_stages=[5]", "attention=aa"),
            r"backbone.attention_stages must be among 1..4 \(layer1..layer4\), got \[5\]",
        ),
        (
            ("attention=aa", "attention.aa.num_heads=1024"),
            "the config cannot build a model: AA needs out_channels >= num_heads",
        ),
    ],
)
def test_what_only_the_model_can_check_is_one_config_error(tiny_config, overrides, message: str):
    cfg = tiny_config(*overrides)
    check_config(cfg)
    with pytest.raises(ConfigError, match=message):
        build_model(build_task(cfg).build_model)


def test_a_batch_larger_than_the_training_set_is_one_line(toy_config, tmp_path):
    cfg = toy_config("data.batch_size=128")  # the toy training set has 64 samples
    with pytest.raises(ConfigError, match="64 training samples per process make no batch of data.batch_size=128"):
        Trainer(cfg, build_task(cfg), tmp_path).fit()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_one_line():
    with pytest.raises(ConfigError, match="trainer.device=cuda but no CUDA device is visible"):
        select_device("cuda")
    with pytest.raises(ConfigError, match="device=cuda:1 but no CUDA device is visible; use device=auto or cpu"):
        select_device("cuda:1", key="device")  # eval.py's key


def test_a_device_torch_does_not_know_is_one_line():
    with pytest.raises(ConfigError, match="trainer.device=tpu is not a device: use auto, cpu, cuda or cuda:<index>"):
        select_device("tpu")


def test_an_existing_checkpoint_path_is_a_valid_resume_value(tiny_config, tmp_path):
    checkpoint = tmp_path / "last.pt"
    checkpoint.touch()
    for value in ("auto", "never", "null", str(checkpoint)):
        check_config(tiny_config(f"trainer.resume={value}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=0", "batch_size=0 is not valid: it must be a positive integer, or null"),
        ("workers=-1", "workers=-1 is not valid: it must be an integer >= 0, or null"),
    ],
)
def test_eval_values_are_checked_too(override: str, message: str):
    cfg = compose_config("checkpoint=last.pt", override, config_name="eval")
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, EVAL_CHECKS)
    check_config(compose_config("checkpoint=last.pt", config_name="eval"), EVAL_CHECKS)
