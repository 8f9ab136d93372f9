import pytest
import torch
from torch import nn

from dcwp_prune.models import FeatureTap, classifier_of, create_model, list_models

FAMILIES = {
    "resnet18": 512,
    "mobilenet_v3_small": 1024,
    "efficientnet_b0": 1280,
    "vgg11": 4096,
    "densenet121": 1024,
    "regnet_y_400mf": 440,
    "convnext_tiny": 768,
    "vit_b_16": 768,
    "cnn": 256,
    "mlp": 100,
}


@pytest.mark.parametrize("name,dim", sorted(FAMILIES.items()))
def test_penultimate_features_for_each_family(name, dim):
    model = create_model(name, num_classes=3).eval()
    size = 224 if name == "vit_b_16" else (28 if name in ("cnn", "mlp") else 64)
    with FeatureTap(model) as tap, torch.no_grad():
        out = model(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 3) and tap.features.shape == (2, dim)
    assert classifier_of(model).out_features == 3


def test_builtin_cnn_is_the_official_architecture():
    cnn = create_model("cnn", 10)
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (4, 4), (2, 2)),
        (64, 128, (4, 4), (2, 2)),
        (128, 256, (4, 4), (2, 2)),
    ]
    assert sum(m.weight.numel() for m in cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))) == 660_992


def test_weights_from_local_file_and_head_swap(tmp_path):
    src = create_model("resnet18", 10)
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    same = create_model("resnet18", 10, weights=str(tmp_path / "r18.pt"))
    assert torch.equal(same.conv1.weight, src.conv1.weight)
    with pytest.warns(UserWarning, match="not loading .*fc.weight"):
        other = create_model("resnet18", 2, weights=str(tmp_path / "r18.pt"))
    assert other.fc.out_features == 2 and torch.equal(other.conv1.weight, src.conv1.weight)


def test_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown model 'resnet81'; did you mean 'resnet18'"):
        create_model("resnet81", 10)
    with pytest.raises(FileNotFoundError, match="weights file .* does not exist"):
        create_model("mlp", 10, weights=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="built-in model 'cnn' has no named weights"):
        create_model("cnn", 10, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="has no nn.Linear classifier"):
        classifier_of(nn.Sequential(nn.Conv2d(1, 1, 1)))
    assert {"cnn", "mlp", "resnet18", "vit_b_16"} <= set(list_models())


@pytest.mark.parametrize("name,size", [("googlenet", 64), ("inception_v3", 75)])
def test_models_with_auxiliary_heads_train_on_one_logits_tensor(name, size):
    model = create_model(name, num_classes=3).train()  # torchvision's default builds return a tuple here
    with FeatureTap(model) as tap, torch.no_grad():
        out = model(torch.zeros(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3) and tap.features.shape[0] == 2
    assert not any("aux" in n.lower() for n, _ in model.named_modules())
