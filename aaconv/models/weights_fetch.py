"""Where weights come from: a file (state dict, aaconv checkpoint, safetensors) or a name,
"torchvision:<model>" / "timm:<model>", read from the torch.hub cache or downloaded. Without network access a
download fails at once in one line naming the URL and where to place the file; a misspelled name suggests
close ones. `stored_backbone` reads the backbone an aaconv checkpoint or export names (for error messages).
Fitting the weights onto a model is aaconv.models.pretrained's part.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor

from aaconv.errors import CheckpointError, first_line
from aaconv.utils.state_dict import torch_load_safely

StateDict = dict[str, Tensor]
log = logging.getLogger("aaconv")


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


def stored_backbone(source: str | os.PathLike) -> str | None:
    """The backbone that weights file `source` names: an aaconv checkpoint's stored `config.backbone.name`, or
    the `model` metadata of a scripts/export.py safetensors file. Read as data (a plain name or nothing, never
    instantiated); None for other files and for torchvision: / timm: names."""
    path = Path(str(source)).expanduser()
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            name = (f.metadata() or {}).get("model")
    else:
        state = torch_load_safely(path, "weights")
        name = _get(_get(_get(state, "config"), "backbone"), "name")
    return name if isinstance(name, str) and name.isidentifier() else None


def _get(node: object, key: str) -> object:
    return node.get(key) if isinstance(node, dict) else None


def read_safetensors(path: Path) -> StateDict:
    """The tensors of a safetensors file (no code is run when reading one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read weights {path}: {first_line(e)}") from e
