"""FX, TorchScript and ONNX over the registry.

What runs where (the CI budget): the expensive checks run on the smallest registered network of each model class
(ResNet, MnasNet, WideResNet: fewest parameters, derived from aaconv.models.registry.MODELS, so a new network
class comes under test with no edit here), at 32 px:
- FX (timm's tracer, AA/AW as leaf modules, and torch.fx.symbolic_trace's default tracer, which records the
  layers' shape-dependent steps as torch.fx.wrap calls) with identical outputs, for every attention variant
  (aaconv.layers.VARIANTS) each network takes;
- on the smallest ResNet and MnasNet (the timm-registered classes; the WRN's outputs at initialisation are too
  chaotic to compare): TorchScript (torch.jit.script in eval mode, of the model and of its FX graph), FX
  backward, and ONNX through torch's exporter against onnxruntime (max abs difference < 1e-4 on the logits):
  once per class, on the variants that hold one part of every kind (aw+aa+se, aw+aa+cbam) taken in turn, so
  every part's layer goes through each (scripting and exporting cost seconds to tens of seconds per model).
The cheap checks (timm's model API) cover every registered timm name in test_timm_models.py.
"""

import warnings

import numpy as np
import pytest
import torch
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from aaconv.layers import VARIANTS, parse_variant
from aaconv.models import MODELS, create_model

SIZE = 32


def _parameters(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, num_classes=10).parameters())


def _smallest_per_class() -> list[str]:
    by_class: dict[type, list[str]] = {}
    for name, entry in MODELS.items():
        by_class.setdefault(entry.cls, []).append(name)
    return [min(names, key=_parameters) for names in by_class.values()]


SMALLEST = _smallest_per_class()
CASES = [(n, v) for n in SMALLEST for v in VARIANTS]
FULL_VARIANTS = [v for v in VARIANTS if len(parse_variant(v)) == max(len(parse_variant(u)) for u in VARIANTS)]
# the timm-registered (ImageNet) classes: a WRN at initialisation is numerically chaotic (AW's per-sample kernels
# up to 2K through 36 pre-activation convs), so its float32 rounding differences reach the logits' own size
TIMM_SMALLEST = [name for name in SMALLEST if MODELS[name].timm_cfg is not None]
FULL_CASES = [(name, FULL_VARIANTS[i % len(FULL_VARIANTS)]) for i, name in enumerate(TIMM_SMALLEST)]


def _model(name: str, variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, variant, num_classes=10, input_size=SIZE).eval()


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """timm's FX feature extraction of the logits (as timm's FX tests)."""
    tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    return create_feature_extractor(
        model, train_return_nodes=train_nodes[-1:], eval_return_nodes=eval_nodes[-1:], tracer_kwargs=tracer
    )


def test_every_network_class_is_covered():
    assert {MODELS[name].cls for name in SMALLEST} == {entry.cls for entry in MODELS.values()}
    covered = {part.name for _, variant in FULL_CASES for part in parse_variant(variant)}  # every part scripted
    assert covered == {part.name for variant in VARIANTS for part in parse_variant(variant)}


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_fx_matches_eager(name, variant):
    model = _model(name, variant)
    x = torch.randn(1, 3, SIZE, SIZE)  # one sample: both graphs run the same layer code, only the graph differs
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(next(iter(_fx(model)(x).values())), expected)
        assert torch.equal(torch.fx.symbolic_trace(model)(x), expected)


@pytest.mark.parametrize(("name", "variant"), FULL_CASES)
def test_torchscript_matches_eager(name, variant):
    """In float64: at initialisation the deep networks' activations grow to ~1e3-1e5, and float32 rounding
    differences between the eager kernels (SDPA, unfolded AW) and the scripted ones grow with them."""
    model = _model(name, variant).double()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    fx = _fx(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(next(iter(torch.jit.script(fx)(x).values())), expected, rtol=1e-6, atol=1e-9)
    next(iter(fx.train()(x).values())).sum().backward()  # FX backward reaches every parameter
    assert all(p.grad is not None for p in fx.parameters())


@pytest.mark.parametrize(("name", "variant"), FULL_CASES)
def test_onnx_matches_onnxruntime(name, variant, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _model(name, variant)
    x = torch.randn(1, 3, SIZE, SIZE)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), path, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
