"""DCWPSparsifier: DCWP's masks through torch.ao.pruning (prepare / step / squash_mask)."""

import pytest
import torch
from torch.nn.utils import parametrize, prune

from dcwp_prune import DCWPMethod, DCWPSparsifier, MaskScores
from tests._models import TinyCNN


def _scored(seed=0):
    torch.manual_seed(seed)
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        for p in scores.parameters():
            p.copy_(torch.randn(p.shape))
    return net, scores


def _masks(net):
    return {name: getattr(net, name).parametrizations.weight[0].mask.clone() for name in ("conv1", "conv2", "fc")}


def test_default_rule_masks_every_scored_tensor_with_logit_at_least_zero():
    net, scores = _scored()
    with torch.no_grad():
        scores["fc.weight"][0, 0] = 0.0  # exactly at the rule's edge: kept, as DCWP keeps p == 0.5
    sparsifier = DCWPSparsifier(scores)
    sparsifier.prepare(net, config=None)  # torch's own default would take nn.Linear layers only
    assert {g["tensor_fqn"] for g in sparsifier.groups} == {"conv1.weight", "conv2.weight", "fc.weight"}
    sparsifier.step()
    for name, mask in _masks(net).items():
        assert torch.equal(mask, (scores[f"{name}.weight"] >= 0).float()), name
    assert _masks(net)["fc"][0, 0] == 1


def test_forward_and_squashed_model_equal_the_masked_dense_model():
    net, scores = _scored(1)
    dense = TinyCNN()
    dense.load_state_dict(net.state_dict())
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc"):
            getattr(dense, name).weight.mul_((scores[f"{name}.weight"] >= 0).float())
    sparsifier = DCWPSparsifier(scores)
    sparsifier.prepare(net, config=None)
    sparsifier.step()
    x = torch.randn(4, 3, 8, 8)
    net.eval(), dense.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), dense(x), atol=1e-6)
    sparsifier.squash_mask()
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert set(net.state_dict()) == set(dense.state_dict())  # plain keys again
    for name in ("conv1", "conv2", "fc"):
        assert torch.equal(getattr(net, name).weight, getattr(dense, name).weight)


def test_sparsity_level_per_group_equals_dcwpmethod_amount():
    net, scores = _scored(2)
    sparsifier = DCWPSparsifier(scores, sparsity_level=0.5)
    sparsifier.prepare(
        net,
        config=[
            {"tensor_fqn": "conv1.weight"},
            {"tensor_fqn": "conv2.weight", "sparsity_level": 0.9},
            {"tensor_fqn": "fc.weight", "threshold": 0.3},
        ],
    )  # a group's own rule replaces the default
    sparsifier.step()
    masks = _masks(net)
    for name, level in (("conv1", 0.5), ("conv2", 0.9)):
        n = scores[f"{name}.weight"].numel()
        assert int((masks[name] == 0).sum()) == round(level * n)
        expected = DCWPMethod(amount=level, scores_are_logits=True).compute_mask(
            scores[f"{name}.weight"].detach(), torch.ones_like(masks[name])
        )
        assert torch.equal(masks[name], expected), name
    keep_p = torch.sigmoid(scores["fc.weight"].detach())
    assert torch.equal(masks["fc"], (keep_p >= 0.3).float())


def test_matches_torch_prune_global_rule_per_tensor():
    """The same logits, the same rule: DCWPSparsifier and DCWPMethod prune the same entries."""
    a, scores = _scored(3)
    b = TinyCNN()
    b.load_state_dict(a.state_dict())
    sparsifier = DCWPSparsifier(scores, threshold=0.6)
    sparsifier.prepare(a, config=None)
    sparsifier.step()
    for name in ("conv1", "conv2", "fc"):
        DCWPMethod.apply(
            getattr(b, name),
            "weight",
            importance_scores=scores[f"{name}.weight"].detach(),
            threshold=0.6,
            scores_are_logits=True,
        )
        assert torch.equal(_masks(a)[name], getattr(b, name).weight_mask), name
        prune.remove(getattr(b, name), "weight")


def test_plain_dict_of_logits_and_errors():
    net, scores = _scored(4)
    plain = {k: v.detach().clone() for k, v in scores.items()}  # what safetensors' load_file returns
    DCWPSparsifier(plain).prepare(net, config=[{"tensor_fqn": "fc.weight"}])
    net, _ = _scored(4)
    with pytest.raises(KeyError, match="no DCWP score for 'fc.weight'"):
        DCWPSparsifier({"conv1.weight": plain["conv1.weight"]}).prepare(net, config=[{"tensor_fqn": "fc.weight"}])
    with pytest.raises(
        ValueError, match=r"scores for 'fc.weight' have shape \(2, 6\) but the weight has shape \(3, 6\)"
    ):
        DCWPSparsifier({"fc.weight": torch.zeros(2, 6)}).prepare(net, config=None)
    with pytest.raises(ValueError, match="Pass at most one of `threshold`, `sparsity_level`"):
        DCWPSparsifier(plain, threshold=0.5, sparsity_level=0.5)
    with pytest.raises(ValueError, match=r"`config\['conv1.weight'\].sparsity_level` to be a float in \[0, 1\]"):
        DCWPSparsifier(plain).prepare(net, config=[{"tensor_fqn": "conv1.weight", "sparsity_level": 1.5}])
    with pytest.raises(ValueError, match="contains NaN"):
        DCWPSparsifier({"fc.weight": torch.full((3, 6), float("nan"))})
    with pytest.raises(ValueError, match="needs a 'tensor_fqn'"):
        DCWPSparsifier(plain).prepare(net, config=[{"module": net.fc}])
