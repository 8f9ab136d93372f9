import pytest
import torch
import torchvision
from torch import nn

from dcwp_prune import MaskScores, prune_channels
from dcwp_prune.adapters.structured import (
    UNSUPPORTED_ARCHITECTURES,
    UnsupportedModelError,
    load_pruning_history,
    read_history,
    save_history,
)

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "vgg11_bn",
          "densenet121", "regnet_y_400mf", "convnext_tiny"]


def _random_scores(model):
    scores = MaskScores.from_model(model)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    return scores


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_models_prune_at_half(name):
    model = torchvision.models.get_model(name, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    result = prune_channels(model, _random_scores(model), x[:1], 0.5)
    model.eval()
    assert model(x).shape == (2, 5)
    assert result.macs_after < 0.5 * result.macs_before
    assert result.params_after < 0.5 * result.params_before
    assert result.channels and result.history


def test_history_rebuilds_the_pruned_model(tmp_path):
    model = torchvision.models.get_model("resnet18", num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    result = prune_channels(model, _random_scores(model), x, 0.3)
    save_history(tmp_path / "h.json", result.history)
    fresh = torchvision.models.get_model("resnet18", num_classes=3).eval()
    load_pruning_history(fresh, read_history(tmp_path / "h.json"), x)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_unsupported_models_get_a_clear_error():
    model = torchvision.models.get_model("shufflenet_v2_x0_5", num_classes=3)
    with pytest.raises(UnsupportedModelError, match="does not support ShuffleNetV2: its functional channel shuffle"):
        prune_channels(model, _random_scores(model), torch.randn(1, 3, 32, 32), 0.5)
    assert "SwinTransformer" in UNSUPPORTED_ARCHITECTURES


def test_nothing_pruned_raises():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    scores = MaskScores.from_model(model)  # only the classifier, which is ignored
    with pytest.raises(RuntimeError, match="structured pruning removed nothing"):
        prune_channels(model, scores, torch.randn(1, 4), 0.5)


def test_frozen_model_is_handled_and_flags_restored():
    model = torchvision.models.get_model("resnet18", num_classes=3)
    scores = _random_scores(model)
    model.requires_grad_(False)
    result = prune_channels(model, scores, torch.randn(1, 3, 32, 32), 0.5)
    assert result.params_ratio > 2
    assert not any(p.requires_grad for p in model.parameters())


def test_bad_ratio():
    model = torchvision.models.get_model("resnet18", num_classes=3)
    with pytest.raises(ValueError, match="pruning_ratio must be < 1"):
        prune_channels(model, _random_scores(model), torch.randn(1, 3, 32, 32), 1.0)
    with pytest.raises(ValueError, match=r"`pruning_ratio` to be a float in \[0, 1\], got -0.1"):
        prune_channels(model, _random_scores(model), torch.randn(1, 3, 32, 32), -0.1)
