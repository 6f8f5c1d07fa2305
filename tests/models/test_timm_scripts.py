"""The calls timm's own `train.py` and `validate.py` make, on every registered model family and attention variant:
an ImageNet recipe's flags `--drop-path 0.05 --grad-checkpointing --model-ema --amp --amp-dtype bfloat16
--channels-last`, and `validate.py --img-size 288` on an AA-ResNet-50 built for 224 px.

train.py: `create_model(name, pretrained=False, in_chans=None, num_classes=..., drop_rate=0.0, drop_path_rate=0.05,
drop_block_rate=None, global_pool=None, bn_momentum=None, bn_eps=None, scriptable=False, checkpoint_path='')`
(timm drops the None keywords), `model.set_grad_checkpointing(enable=True)`, `resolve_data_config(vars(args),
model=model)`, `model.to(memory_format=torch.channels_last)`, `create_optimizer_v2(model, ...)`,
`ModelEmaV3(model, decay=...)`, then steps under `torch.autocast(device_type, dtype=torch.bfloat16)` with channels_last
inputs, and `model_ema.update(model, step=...)`. validate.py: `create_model(...)`, `resolve_data_config(vars(args),
model=model, use_test_size=True)` with `img_size=288`, then the model in eval mode on that size.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.layers import DropPath
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3

from aaconv.models.timm_models import timm_models

# One network of each family (the ResNets share one class, the MnasNets another) with every variant.
NAMES = [name for name, (network, _) in timm_models().items() if network in ("resnet18", "mnasnet_a1")]


def create_as_train_py(name: str, **kwargs: object) -> torch.nn.Module:
    return timm.create_model(
        name,
        pretrained=False,
        in_chans=None,
        drop_rate=0.0,
        drop_block_rate=None,
        global_pool=None,
        bn_momentum=None,
        bn_eps=None,
        scriptable=False,
        checkpoint_path="",
        **kwargs,
    )


@pytest.mark.parametrize("name", NAMES)
def test_timm_train_py_recipe_flags_train_every_family_and_variant(name: str) -> None:
    torch.manual_seed(0)
    model = create_as_train_py(name, num_classes=5, drop_path_rate=0.05)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    # --drop-path: rising over the blocks, up to the rate (MnasNet's last block gets 0.05 * (N - 1) / N, as timm's
    # EfficientNet; the exact rules are tested in tests/models/test_drop_path.py).
    assert rates and 0 < max(rates) <= 0.05 and rates == sorted(rates)
    model.set_grad_checkpointing(enable=True)  # --grad-checkpointing
    assert resolve_data_config({}, model=model)["input_size"] == (3, 224, 224)
    model.to(memory_format=torch.channels_last)  # --channels-last
    # train.py's rule: lr = lr_base (0.1 for SGD) * global batch / 256; a larger step diverges on a 2-image batch.
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1 * 2 / 256, weight_decay=1e-4, momentum=0.9)
    ema = ModelEmaV3(model, decay=0.9)  # --model-ema
    # 64 px: at 32 px the last stages see 1x1 maps, where BatchNorm over 2 values makes gradients of 1e8 in timm's own
    # mnasnet_100 as well.
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    targets = torch.tensor([1, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # --amp --amp-dtype bfloat16
        loss = torch.nn.functional.cross_entropy(model(images), targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()
    ema.update(model, step=0)
    ema.module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(ema.module(images)).all()


def test_timm_validate_py_at_288_px_on_a_model_built_for_224() -> None:
    """AA-ResNet-50's relative tables are built for 224 px (layer3 14x14, layer4 7x7); at 288 px its maps are
    18x18 and 9x9 (the tables' rule for larger maps: aaconv.layers.relative_tables)."""
    torch.manual_seed(0)
    model = timm.create_model("aa_resnet50", pretrained=False, num_classes=10).eval()
    config = resolve_data_config({"img_size": 288}, model=model, use_test_size=True)
    assert config["input_size"] == (3, 288, 288) and config["crop_pct"] == 0.875
    with torch.no_grad():
        logits = model(torch.randn(1, *config["input_size"]))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
