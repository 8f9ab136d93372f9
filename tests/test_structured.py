import copy

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

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "vgg11_bn",
    "densenet121",
    "regnet_y_400mf",
    "convnext_tiny",
]


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


def _small_vit(num_classes=5):
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=num_classes
    )
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-initialises the head
    return model


def test_squeezenet_conv_classifier_is_protected():
    """SqueezeNet's logits come from a Conv2d: it must keep its 10 output channels."""
    model = torchvision.models.squeezenet1_1(num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    from dcwp_prune.adapters.structured import logits_module

    assert logits_module(model, x) is model.classifier[1]
    result = prune_channels(model, _random_scores(model), x, 0.5)
    assert model.classifier[1].out_channels == 10 and model.eval()(x).shape == (1, 10)
    assert result.macs_after < result.macs_before


def test_output_shape_change_is_refused():
    model = torchvision.models.squeezenet1_1(num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    import dcwp_prune.adapters.structured as structured

    original = structured.logits_module
    structured.logits_module = lambda m, x: m.features[0]  # pretend the wrong layer produces the output
    try:
        with pytest.raises(RuntimeError, match=r"changed the output shape \(1, 10\) -> \(1, \d+\)"):
            prune_channels(model, _random_scores(model), x, 0.5)
    finally:
        structured.logits_module = original


@pytest.mark.parametrize("steps", [1, 3])
def test_vit_prunes_structurally_and_reloads(steps, tmp_path):
    model = _small_vit()
    x = torch.randn(2, 3, 32, 32)
    scores = _random_scores(model)
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in scores
    result = prune_channels(model, scores, x, 0.4, iterative_steps=steps)
    width = model.conv_proj.out_channels
    assert width < 64 and width % 4 == 0 and model.hidden_dim == width  # heads divide the embedding
    assert model.encoder.layers[0].self_attention.embed_dim == width
    assert result.macs_after < result.macs_before and result.params_after < result.params_before
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    save_history(tmp_path / "h.json", result.history)
    fresh = _small_vit()
    load_pruning_history(fresh, read_history(tmp_path / "h.json"), x)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), model.eval()(x), atol=1e-5)


def test_vit_unstructured_masks_attention_exactly():
    """DCWPMethod covers in_proj_weight / out_proj: the pruned model equals the dense one with masked weights."""
    from torch.nn.utils import prune

    from dcwp_prune import dcwp_global_unstructured, pruned_sparsity

    model = _small_vit()
    scores = _random_scores(model)
    dense = _small_vit()
    dense.load_state_dict(model.state_dict())
    dcwp_global_unstructured(model, scores.probs(), threshold=0.5)
    masks = scores.hard_mask()
    with torch.no_grad():
        for fqn, mask in masks.items():
            module_name, _, tensor = fqn.rpartition(".")
            getattr(dense.get_submodule(module_name), tensor).mul_(mask)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), dense.eval()(x), atol=1e-5)
    attn = model.encoder.layers[0].self_attention
    assert prune.is_pruned(attn) and hasattr(attn, "in_proj_weight_mask")
    expected = 1 - sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert pruned_sparsity(model) == pytest.approx(expected)


def test_target_macs_ratio_finds_the_smallest_ratio_that_reaches_it():
    from dcwp_prune import create_model
    from dcwp_prune.adapters.structured import TARGET_SEARCH_STEPS

    torch.manual_seed(0)
    base = create_model("cnn", 10).eval()
    scores = _random_scores(base)
    x = torch.randn(1, 3, 28, 28)
    model = copy.deepcopy(base)
    result = prune_channels(model, scores, x, 0.6, target_macs_ratio=2.0)
    assert result.macs_ratio >= 2.0 and 0 < result.pruning_ratio <= 0.6
    # the same ratio given directly prunes the same channels; a ratio one search step smaller misses the target
    direct = copy.deepcopy(base)
    again = prune_channels(direct, scores, x, result.pruning_ratio)
    assert again.channels == result.channels and again.macs_after == result.macs_after
    for (_, a), (_, b) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b)
    below = prune_channels(copy.deepcopy(base), scores, x, result.pruning_ratio - 0.6 / 2**TARGET_SEARCH_STEPS)
    assert below.macs_ratio < 2.0


def test_target_macs_ratio_errors():
    from dcwp_prune import create_model

    model = create_model("cnn", 10)
    scores = _random_scores(model)
    x = torch.randn(1, 3, 28, 28)
    with pytest.raises(
        ValueError, match=r"target_macs_ratio 3.0 is not reached at pruning_ratio 0.1 \(MACs 1\.\d\d\dx"
    ):
        prune_channels(model, scores, x, 0.1, target_macs_ratio=3.0)
    assert model.features[0].out_channels == 64  # the trials ran on copies
    with pytest.raises(ValueError, match="target_macs_ratio must be > 1 .* got 0.5"):
        prune_channels(model, scores, x, 0.5, target_macs_ratio=0.5)
