from __future__ import annotations

import pytest
import torch

from hydralanet import HydraLANet
from hydralanet.model.network import count_parameters


def test_published_model_size_and_shapes():
    model = HydraLANet().eval()  # resnet50, D = 256
    params = count_parameters(model)
    assert 62e6 <= params <= 66e6, params
    with torch.no_grad():
        for h, w in [(128, 128), (96, 128)]:  # square and not: every stride-32 size comes back whole
            out = model(torch.randn(1, 3, h, w))
            assert out.shape == (1, 4, h, w)
            assert torch.isfinite(out).all()


def test_light_encoder_forward_backward():
    model = HydraLANet(encoder="resnet18", decoder_channels=64)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, 4, 64, 96)
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert model.encoder.out_channels == (64, 128, 256, 512)


def test_hydra_head_structure_and_bias():
    model = HydraLANet(encoder="resnet18", decoder_channels=64, head_bias_init=-2.0)
    assert list(model.head.branches) == ["EX", "HE", "MA", "SE"]
    for branch in model.head.branches.values():
        assert branch[0].out_channels == 16  # max(1, int(64 * 0.25))
        assert torch.all(branch[-1].bias == -2.0)
    # D = 256 gives the published hidden width of 64.
    assert HydraLANet(encoder="resnet18", decoder_channels=256).head.branches["MA"][0].out_channels == 64


def test_untrained_logits_start_near_head_bias():
    """With zeroed hidden weights each branch outputs exactly its bias: sigmoid(-2) ~ 0.12."""
    model = HydraLANet(encoder="resnet18", decoder_channels=16).eval()
    for branch in model.head.branches.values():
        torch.nn.init.zeros_(branch[-1].weight)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert torch.allclose(out, torch.full_like(out, -2.0))


def test_deep_supervision_only_in_training():
    model = HydraLANet(encoder="resnet18", decoder_channels=16, deep_supervision=True)
    logits, aux = model.train()(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4, 64, 64) and len(aux) == 3
    assert all(a.shape == (2, 4, 64, 64) for a in aux)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="resnet101"):
        HydraLANet(encoder="resnet101")
    with pytest.raises(ValueError, match="decoder_channels"):
        HydraLANet(encoder="resnet18", decoder_channels=0)


def test_pretrained_weights_offline_fail_loudly(monkeypatch, tmp_path):
    """Offline, asking for ImageNet weights must fail with a message, not fall back silently."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: a download is attempted
    with pytest.raises(RuntimeError, match="could not download ImageNet weights for resnet18"):
        HydraLANet(encoder="resnet18", pretrained_encoder=True)
