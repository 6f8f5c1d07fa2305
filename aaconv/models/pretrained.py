"""Load torchvision / timm / aaconv weights into a backbone, attention variants included.

Attention layers keep the replaced conv as a sub-module named `conv` (AAConv2d's conv branch, AWConv2d's
kernel), so `layer2.0.conv2.weight` of torchvision becomes `layer2.0.conv2.conv.weight`. A key is loaded
  - as is, when the name and shape match;
  - "adapted", when the name matches after dropping `.conv.` levels or the shapes differ only in size:
    the overlapping leading block is copied (AA's conv branch keeps the first C_out - dv pretrained
    filters; a projection that also reads AA channels keeps the pretrained weights for the others),
    the rest keeps its initialisation;
and everything else is reported. `load_pretrained(..., strict=True)` (an aaconv checkpoint of the same
model) fails with the lists of missing / unexpected keys instead.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from aaconv.errors import CheckpointError, first_line
from aaconv.utils.state_dict import load_model_state, torch_load_safely

StateDict = dict[str, Tensor]
log = logging.getLogger("aaconv")


@dataclass
class LoadReport:
    """What `load_pretrained` did, key by key (model keys, except `unexpected`)."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def head(keys: list[str]) -> str:
            return f"{len(keys)}" + (f" (e.g. {', '.join(keys[:3])})" if keys else "")

        return (
            f"loaded {head(self.loaded)}; adapted {head(self.adapted)}; not in the weights {head(self.missing)}; "
            f"unused {head(self.unexpected)}"
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
    """timm keys -> aaconv keys (timm's EfficientNet SE is conv_reduce / conv_expand, ours fc1 / fc2)."""
    return {
        k.replace(".se.conv_reduce.", ".se.fc1.").replace(".se.conv_expand.", ".se.fc2."): v for k, v in state.items()
    }


def _normalise(state: StateDict) -> StateDict:
    if any(k.startswith("layers.") for k in state):
        state = convert_torchvision_mnasnet(state)
    return convert_timm(state)


def _unknown_name(library: str, name: str, known: list[str]) -> CheckpointError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return CheckpointError(
        f"{library} has no pretrained model {name!r}{hint}; {library}:<name> takes a name "
        f"from {library}'s model list, or pass a local weights file"
    )


def _download_failed(source: str, error: BaseException, url: str, path: Path) -> CheckpointError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return CheckpointError(
        f"cannot download {source} ({reason}); without network access, download {url} "
        f"and place it at {path}, or pass a local file as the weights"
    )


def _check_reachable(source: str, url: str, path: Path) -> None:
    """Fails at once when the download host has no address (no network), instead of after the retries of
    huggingface_hub (about a minute). Behind a proxy the host may not resolve locally: no check then."""
    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
    except OSError as e:
        raise _download_failed(source, e, url, path) from None


def _download(source: str, url: str, path: Path, fetch: Callable[[], StateDict]) -> StateDict:
    _check_reachable(source, url, path)
    log.info("downloading %s from %s", source, url)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's and huggingface_hub's progress lines
            return fetch()
    except Exception as e:  # urllib's, requests', httpx' and huggingface_hub's errors share no base class
        raise _download_failed(source, e, url, path) from None


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub (torchvision, timm's URL weights) keeps the download of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torchvision_weights(name: str) -> StateDict:
    """torchvision's default ImageNet weights of model `name`, from the torch.hub cache or downloaded."""
    import torchvision

    try:
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    except (ValueError, KeyError):
        raise _unknown_name("torchvision", name, torchvision.models.list_models()) from None
    path = hub_checkpoint_path(url)
    if path.is_file():
        return read_weights(path)
    return _download(
        f"torchvision:{name}",
        url,
        path,
        lambda: torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True),
    )


def timm_weights(name: str) -> StateDict:
    """timm's pretrained weights of model `name` (a tag such as resnet18.a1_in1k allowed): from
    <torch.hub dir>/checkpoints when placed there, else downloaded (Hugging Face hub or URL)."""
    import timm

    if not timm.is_model(name):
        raise _unknown_name("timm", name, timm.list_models())
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(f"timm has no pretrained weights for {name!r}; pass a local weights file")
    if cfg.hf_hub_id:
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{cfg.hf_hub_filename or 'model.safetensors'}"
        path = Path(torch.hub.get_dir()) / "checkpoints" / "timm" / f"{cfg.hf_hub_id.split('/')[-1]}{Path(url).suffix}"
    else:
        url, path = cfg.url, hub_checkpoint_path(cfg.url)
    if path.is_file():
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}).state_dict()
    return _download(f"timm:{name}", url, path, lambda: timm.create_model(name, pretrained=True).state_dict())


def read_weights(source: str | os.PathLike) -> StateDict:
    """A state dict from a file (torchvision / timm state dict, an aaconv checkpoint's `model`, or a
    `.safetensors` file such as scripts/export.py writes), or by name: "torchvision:<model>" /
    "timm:<model>" (downloaded, needs the network, or placed in the cache path that the error message names)."""
    text = str(source)
    if text.startswith("torchvision:"):
        return torchvision_weights(text.split(":", 1)[1])
    if text.startswith("timm:"):
        return timm_weights(text.split(":", 1)[1])
    path = Path(text).expanduser()
    if path.is_dir():
        raise CheckpointError(f"weights {path} is a folder; pass a file inside it (last.pt, *.safetensors, *.pth)")
    if not path.is_file():
        raise CheckpointError(
            f"weights {path} do not exist; pass a state-dict file, an aaconv checkpoint, "
            "or torchvision:<name> / timm:<name>"
        )
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    state = torch_load_safely(path, "weights")
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (expected name -> tensor)")
    return state


def read_safetensors(path: Path) -> StateDict:
    """The tensors of a safetensors file (no code is run when reading one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read weights {path}: {first_line(e)}") from e


def _source_key(key: str, source: StateDict) -> str | None:
    while key not in source and ".conv." in key:
        key = key.replace(".conv.", ".", 1)
    return key if key in source else None


def _centered_rows(length: int, rows: int) -> slice:
    start = (length - rows) // 2
    return slice(start, start + rows)


def _overlap_copy(key: str, target: Tensor, value: Tensor) -> bool:
    """Copies the overlap of `value` into `target`: the leading block (channels only: a conv kernel of
    another size is never cut to fit), or for AA's relative tables (offsets -(n-1)..n-1 around the middle
    row) the central rows, so offset d stays offset d."""
    if target.dim() != value.dim() or target.shape[2:] != value.shape[2:]:
        return False
    region = [slice(0, min(a, b)) for a, b in zip(target.shape, value.shape, strict=True)]
    if key.endswith(("rel_width", "rel_height")):
        rows = min(target.shape[0], value.shape[0])
        target[_centered_rows(target.shape[0], rows)] = value[_centered_rows(value.shape[0], rows)].to(target.dtype)
        return True
    target[tuple(region)] = value[tuple(region)].to(target.dtype)
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
    """Loads `source` (see read_weights, or a state dict) into `model` wherever shapes match.

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
    own = model.state_dict()
    for key, target in own.items():
        found = _source_key(key, state)
        if found is None:
            report.missing.append(key)
            continue
        value = state[found]
        if found == key and value.shape == target.shape:
            target.copy_(value)
            report.loaded.append(key)
        elif not key.startswith(exact) and _overlap_copy(key, target, value):
            report.adapted.append(key)
        else:
            report.missing.append(key)
            continue
        used.add(found)
    report.unexpected = sorted(set(state) - used)
    model.load_state_dict(own)
    return report


def init_backbone(model: nn.Module, weights: str | os.PathLike, *, exact: tuple[str, ...] = ()) -> LoadReport:
    """`backbone.weights` of every task: loads `weights` into `model` (see load_pretrained) and logs the
    report (loaded / adapted / not in the weights / unused keys). Weights that fit less than half of the
    model's tensors are another architecture's: CheckpointError (a run would otherwise train mostly from
    scratch while reporting pretrained weights). Backbone tensors left out (all but the `exact` prefixes, the
    classifier) are a warning naming them."""
    report = load_pretrained(model, weights, exact=exact)
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
