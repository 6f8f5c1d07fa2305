"""Load torchvision / timm / aaconv weights into a backbone, attention variants included: the keys are
converted and fitted onto the model here; reading files and names is aaconv.models.weights_fetch's part.

Attention layers keep the replaced conv as a sub-module named `conv` (AAConv2d's conv branch, AWConv2d's
kernel), so `layer2.0.conv2.weight` of torchvision becomes `layer2.0.conv2.conv.weight`. Each model tensor is
matched to the weights' tensor of its name, or of its name with `.conv.` levels dropped, and is
  - loaded as is, when the name and shape match;
  - "adapted", when the name matches only after dropping `.conv.` levels and the shape matches (AW's kernel), or
    when the tensor belongs to an attention layer (a module of a registered attention part: AAConv2d, AWConv2d,
    SqueezeExcite, CBAM) and the shapes differ only in their first two sizes: the overlapping leading block is
    copied, the rest keeps its initialisation. That covers AA's conv branch (the first C_out - dv pretrained
    filters), an aaconv checkpoint of other attention options (dk, dv, SE width), and AA's relative tables of
    another input size, read at the model's table size by the rule the layers apply in their forward
    (aaconv.layers.relative_tables.relative_table: offset d stays offset d, a shorter table takes the central
    rows, a longer one the trained rows with its longer offsets clipped to the outermost), so the loaded model
    computes what the weights' own model computes at every map size;
  - left at its initialisation when it is one of the `exact` prefixes (the classifier) and its shape differs
    (fine-tuning to another number of classes);
  - a shape mismatch otherwise (`LoadReport.mismatched`): a tensor outside the attention layers whose shape
    differs, or any tensor whose kernel differs (a 1x1 conv is never cut from a 3x3 one). Such weights were
    trained for another architecture (ResNet-50's bottleneck into ResNet-18), and `init_backbone` refuses them.
A model tensor the weights lack is "not in the weights" (a smaller sibling, resnet18 into resnet34, leaves the
extra blocks so), a weights tensor the model lacks is "unused". `load_pretrained(..., strict=True)` (an aaconv
checkpoint of the same model) fails with the lists of missing / unexpected keys instead.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from aaconv.errors import CheckpointError
from aaconv.layers import parts
from aaconv.layers.relative_tables import relative_table
from aaconv.models.weights_fetch import StateDict, read_weights, stored_backbone
from aaconv.utils.state_dict import load_model_state

log = logging.getLogger("aaconv")
Shape = tuple[int, ...]


@dataclass
class LoadReport:
    """What `load_pretrained` did, key by key (model keys, except `unexpected`); `mismatched` maps a model key
    to (the weights' shape, the model's shape) where they differ in a way no adaptation covers."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)

    def summary(self) -> str:
        def head(keys: list[str]) -> str:
            return f"{len(keys)}" + (f" (e.g. {', '.join(keys[:3])})" if keys else "")

        mismatched = f"; other shapes {head(list(self.mismatched))}" if self.mismatched else ""
        return (
            f"loaded {head(self.loaded)}; adapted {head(self.adapted)}; not in the weights {head(self.missing)}; "
            f"unused {head(self.unexpected)}{mismatched}"
        )


def convert_torchvision_mnasnet(state: StateDict) -> StateDict:
    """torchvision `mnasnet*` keys (layers.<i>...) -> aaconv / timm MnasNet keys (conv_stem, blocks...)."""
    top = {
        "0": "conv_stem",
        "1": "bn1",
        "3": "blocks.0.0.conv_dw",
        "4": "blocks.0.0.bn1",
        "6": "blocks.0.0.conv_pw",
        "7": "blocks.0.0.bn2",
        "14": "conv_head",
        "15": "bn2",
    }
    inner = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "6": "conv_pwl", "7": "bn3"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"layers\.(\d+)\.(\d+)\.layers\.(\d+)\.(.+)", key):
            key = f"blocks.{int(m[1]) - 7}.{m[2]}.{inner[m[3]]}.{m[4]}"
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)", key):
            key = f"{top[m[1]]}.{m[2]}"
        elif key.startswith("classifier.1."):
            key = "classifier." + key.removeprefix("classifier.1.")
        out[key] = value
    return out


def convert_timm(state: StateDict) -> StateDict:
    """timm keys -> aaconv keys: timm names a block's post-block attention ``se`` (ours ``post_attention``, as
    ``backbone.accept_se_keys``), and its EfficientNet SE's convs conv_reduce / conv_expand (ours fc1 / fc2)."""
    renames = ((".se.conv_reduce.", ".se.fc1."), (".se.conv_expand.", ".se.fc2."), (".se.", ".post_attention."))
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def _normalise(state: StateDict) -> StateDict:
    if any(k.startswith("layers.") for k in state):
        state = convert_torchvision_mnasnet(state)
    return convert_timm(state)


def _source_key(key: str, source: StateDict) -> str | None:
    while key not in source and ".conv." in key:
        key = key.replace(".conv.", ".", 1)
    return key if key in source else None


def attention_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The key prefixes ("layer3.0.conv2.") of `model`'s attention layers: its modules of a registered
    attention part's classes, whose tensors are sized by the attention options."""
    classes = tuple(cls for part in parts().values() for cls in part.modules)
    return tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, classes))


def _overlap_copy(key: str, target: Tensor, value: Tensor) -> bool:
    """Copies the overlap of `value` into `target`: the leading block (channels only: a conv kernel of
    another size is never cut to fit); AA's relative tables (offsets -(n-1)..n-1 around the middle row) are first
    read at the target's length by `relative_table`, then their leading columns copied."""
    if target.dim() != value.dim() or target.shape[2:] != value.shape[2:]:
        return False
    if key.endswith(("rel_width", "rel_height")):
        value = relative_table(value, (target.shape[0] + 1) // 2)
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(target.shape, value.shape, strict=True))
    target[overlap] = value[overlap].to(target.dtype)
    return True


@torch.no_grad()
def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | StateDict,
    *,
    strict: bool = False,
    prefix: str = "",
    exact: tuple[str, ...] = (),
) -> LoadReport:
    """Loads `source` (see read_weights, or a state dict) into `model` by the rules of the module docstring.

    Args:
        strict: every key must match in name and shape (CheckpointError listing the differences).
        prefix: drop this prefix from the source keys first (e.g. "backbone.body.").
        exact: model key prefixes loaded only when the shape matches, never adapted (a classifier for
            another number of classes keeps its initialisation).
    """
    state = source if isinstance(source, dict) else read_weights(source)
    state = _normalise({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    if strict:
        load_model_state(model, state, str(source) if not isinstance(source, dict) else "state dict")
        return LoadReport(loaded=sorted(state))
    report, used = LoadReport(), set()
    own, attention = model.state_dict(), attention_prefixes(model)
    for key, target in own.items():
        found = _source_key(key, state)
        if found is None:
            report.missing.append(key)
            continue
        value = state[found]
        if found == key and value.shape == target.shape:
            target.copy_(value)
            report.loaded.append(key)
        elif key.startswith(exact):
            report.missing.append(key)
            continue
        elif (value.shape == target.shape or key.startswith(attention)) and _overlap_copy(key, target, value):
            report.adapted.append(key)
        else:
            report.mismatched[key] = (tuple(value.shape), tuple(target.shape))
            continue
        used.add(found)
    report.unexpected = sorted(set(state) - used)
    model.load_state_dict(own)
    return report


def _mismatch_error(weights: str | os.PathLike, report: LoadReport) -> CheckpointError:
    """The refusal of weights with a shape mismatch: the first key, both shapes, and the fix (the backbone an
    aaconv checkpoint names, when it names one)."""
    key, (theirs, ours) = next(iter(report.mismatched.items()))
    trained_as = stored_backbone(weights)
    origin = f" (backbone.name={trained_as} in their config)" if trained_as else ""
    other = " (or train that one with them)" if trained_as else ""
    return CheckpointError(
        f"backbone.weights {weights} were trained for another architecture{origin}: {key} is {theirs} in the "
        f"weights but {ours} in this model ({len(report.mismatched)} tensors differ so); pass weights of this "
        f"backbone{other}, or backbone.weights=null"
    )


def init_backbone(model: nn.Module, weights: str | os.PathLike, *, exact: tuple[str, ...] = ()) -> LoadReport:
    """`backbone.weights` of every task: loads `weights` into `model` (see load_pretrained) and logs the
    report (loaded / adapted / not in the weights / unused keys). Weights of another architecture are a
    CheckpointError: a tensor whose shape no adaptation covers (`LoadReport.mismatched`), or weights that fit
    less than half of the model's tensors (a run would otherwise train mostly from scratch while reporting
    pretrained weights). Backbone tensors left out (all but the `exact` prefixes, the classifier) are a warning
    naming them."""
    report = load_pretrained(model, weights, exact=exact)
    if report.mismatched:
        raise _mismatch_error(weights, report)
    fitted, total = len(report.loaded) + len(report.adapted), len(report.loaded + report.adapted + report.missing)
    if fitted < total / 2:
        raise CheckpointError(
            f"backbone.weights {weights} fit only {fitted} of this model's {total} tensors ({report.summary()}); "
            "they were trained for another architecture: pass weights of this backbone, or backbone.weights=null"
        )
    log.info("backbone weights %s: %s", weights, report.summary())
    untrained = [key for key in report.missing if not key.startswith(exact)]
    if untrained:
        log.warning(
            "backbone.weights %s leave %d of the backbone's tensors at their random initialisation (e.g. %s): "
            "expected for attention layers added to a plain network, not for weights of this very architecture",
            weights,
            len(untrained),
            ", ".join(untrained[:3]),
        )
    return report
