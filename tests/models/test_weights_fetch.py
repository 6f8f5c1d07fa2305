"""Weights by name without network access: one-line errors naming where to place the file, suggestions for
misspelled names, and the placed files read back."""

import pytest
import torch
import torchvision

from aaconv.errors import CheckpointError
from aaconv.models.weights_fetch import read_weights


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch.hub / Hugging Face cache and no network: every host name fails to resolve."""
    import socket

    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for proxy in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize(
    "name, place",
    [
        ("torchvision:resnet18", "resnet18-f37072fd.pth"),
        ("timm:resnet18", "timm/resnet18.a1_in1k.safetensors"),
    ],
)
def test_offline_download_is_one_line_naming_where_to_place_the_file(offline, name, place):
    with pytest.raises(CheckpointError, match=f"cannot download {name}.*place it at {offline / place}") as error:
        read_weights(name)
    assert "\n" not in str(error.value) and "pass a local file" in str(error.value)


@pytest.mark.parametrize(
    "name, suggestion", [("torchvision:resnet_18", "resnet18"), ("timm:semnasnet100", "semnasnet_100")]
)
def test_misspelled_name_is_one_line_with_suggestions(offline, name, suggestion):
    with pytest.raises(CheckpointError, match=f"has no pretrained model .*did you mean .*{suggestion}") as error:
        read_weights(name)
    assert "\n" not in str(error.value)


def test_names_load_the_files_placed_where_the_error_says(offline):
    import safetensors.torch
    import timm

    offline.joinpath("timm").mkdir(parents=True)
    torchvision_state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(torchvision_state, offline / "resnet18-f37072fd.pth")
    timm_state = timm.create_model("resnet18").state_dict()
    safetensors.torch.save_file(timm_state, offline / "timm/resnet18.a1_in1k.safetensors")
    for name, expected in (("torchvision:resnet18", torchvision_state), ("timm:resnet18", timm_state)):
        state = read_weights(name)
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), name
