import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from dcwp_prune import DCWPMethod, MaskScores, dcwp_global_unstructured, dcwp_unstructured, pruned_sparsity
from tests._models import TinyCNN


def _distinct_scores(net):
    n = sum(m.weight.numel() for m in (net.conv1, net.conv2, net.fc))
    perm = (torch.randperm(n).float() + 1) / (n + 1)  # distinct values in (0, 1)
    out, i = {}, 0
    for m in (net.conv1, net.conv2, net.fc):
        out[(m, "weight")] = perm[i : i + m.weight.numel()].view_as(m.weight)
        i += m.weight.numel()
    return out


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.9, 1.0, 17])
def test_global_amount_matches_l1_unstructured(amount):
    a, b = TinyCNN(), TinyCNN()
    b.load_state_dict(a.state_dict())
    sa = _distinct_scores(a)
    sb = {(getattr(b, m_name), "weight"): sa[(getattr(a, m_name), "weight")] for m_name in ("conv1", "conv2", "fc")}
    params_a, params_b = list(sa), list(sb)
    prune.global_unstructured(params_a, pruning_method=DCWPMethod, importance_scores=sa, amount=amount)
    prune.global_unstructured(params_b, pruning_method=prune.L1Unstructured, importance_scores=sb, amount=amount)
    total = sum(m.weight.numel() for m, _ in params_a)
    k = amount if isinstance(amount, int) else round(amount * total)
    zeros = sum(int((m.weight_mask == 0).sum()) for m, _ in params_a)
    assert zeros == k
    for (ma, _), (mb, _) in zip(params_a, params_b):
        assert torch.equal(ma.weight_mask, mb.weight_mask)


def test_per_module_matches_l1_unstructured():
    a, b = nn.Linear(6, 5), nn.Linear(6, 5)
    s = torch.rand(5, 6)
    DCWPMethod.apply(a, "weight", importance_scores=s, amount=0.4)
    prune.l1_unstructured(b, "weight", amount=0.4, importance_scores=s)
    assert torch.equal(a.weight_mask, b.weight_mask)


def test_threshold_rule_exact_including_half():
    lin = nn.Linear(5, 1, bias=False)
    s = torch.tensor([[0.0, 0.4999, 0.5, 0.5001, 1.0]])
    DCWPMethod.apply(lin, "weight", importance_scores=s)  # default: threshold 0.5, keep p >= 0.5
    assert lin.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]
    lin2 = nn.Linear(5, 1, bias=False)
    DCWPMethod.apply(lin2, "weight", importance_scores=s, threshold=0.5, inclusive=False)
    assert lin2.weight_mask.tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    lin3 = nn.Linear(5, 1, bias=False)
    DCWPMethod.apply(lin3, "weight", importance_scores=torch.logit(s.clamp(1e-6, 1 - 1e-6)), scores_are_logits=True)
    assert lin3.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.5}])
def test_global_threshold_and_default(kwargs):
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    prune.global_unstructured(
        list(scores.to_importance_scores()),
        pruning_method=DCWPMethod,
        importance_scores=scores.to_importance_scores(),
        **kwargs,
    )
    for fqn, mask in scores.hard_mask().items():
        module = net.get_submodule(fqn.rsplit(".", 1)[0])
        assert torch.equal(module.weight_mask, mask)


def test_two_rounds_compose_and_stable_ties():
    lin = nn.Linear(8, 1, bias=False)
    s = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9]])
    DCWPMethod.apply(lin, "weight", importance_scores=s, amount=2)
    assert lin.weight_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1]]  # ties broken by position
    DCWPMethod.apply(lin, "weight", importance_scores=s, amount=0.5)  # half of the remaining 6
    assert lin.weight_mask.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_remove_keeps_zeros_and_forward_equals_masked_dense():
    net = TinyCNN().eval()
    dense = TinyCNN().eval()
    dense.load_state_dict(net.state_dict())
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    dcwp_global_unstructured(net, scores, sparsity=0.6)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        masks = {fqn: (net.get_submodule(fqn.rsplit(".", 1)[0]).weight_mask) for fqn in scores}
        for fqn, mask in masks.items():
            dense.get_submodule(fqn.rsplit(".", 1)[0]).weight.mul_(mask)
        assert torch.allclose(net(x), dense(x), atol=1e-6)
    assert abs(pruned_sparsity(net) - 0.6) < 1e-3
    for fqn in scores:
        prune.remove(net.get_submodule(fqn.rsplit(".", 1)[0]), "weight")
    with torch.no_grad():
        assert torch.allclose(net(x), dense(x), atol=1e-6)
    assert set(net.state_dict()) == set(dense.state_dict())


def test_sparsity_counts_existing_zeros():
    net = TinyCNN()
    scores = {f: torch.rand_like(p) for f, p in MaskScores.from_model(net).items()}
    total = sum(s.numel() for s in scores.values())
    dcwp_global_unstructured(net, scores, amount=0.25)
    dcwp_global_unstructured(net, scores, sparsity=0.5)
    assert sum(int((net.get_submodule(f.rsplit(".", 1)[0]).weight_mask == 0).sum()) for f in scores) == round(
        0.5 * total
    )
    with pytest.raises(ValueError, match=r"target sparsity 0.3 .* is below the current sparsity 0.5000"):
        dcwp_global_unstructured(net, scores, sparsity=0.3)


def test_function_twin_and_params_list():
    lin = nn.Linear(3, 2)
    s = torch.tensor([[0.1, 0.9, 0.6], [0.7, 0.2, 0.3]])
    assert dcwp_unstructured(lin, "weight", s) is lin
    assert lin.weight_mask.tolist() == [[0, 1, 1], [1, 0, 0]]
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    keyed = {(a, "weight"): torch.full((2, 2), 0.2), (b, "weight"): torch.full((2, 2), 0.7)}
    dcwp_global_unstructured([(a, "weight"), (b, "weight")], keyed)
    assert a.weight_mask.sum() == 0 and b.weight_mask.sum() == 4


def test_errors():
    net = TinyCNN()
    good = {f: torch.rand_like(p) for f, p in MaskScores.from_model(net).items()}
    with pytest.raises(ValueError, match=r"expects keep-probabilities in \[0, 1\].*lacks a key"):
        prune.global_unstructured(
            [(net.conv1, "weight"), (net.fc, "weight")],
            pruning_method=DCWPMethod,
            importance_scores={(net.fc, "weight"): good["fc.weight"]},
            amount=0.5,
        )
    with pytest.raises(KeyError, match="no scores for 1 of 2 parameters"):
        dcwp_global_unstructured([(net.conv1, "weight"), (net.fc, "weight")], {(net.fc, "weight"): good["fc.weight"]})
    with pytest.raises(ValueError, match=r"scores for 'fc.weight' have shape \(6,\) but the weight has shape \(3, 6\)"):
        dcwp_global_unstructured(net, {**good, "fc.weight": torch.rand(6)})
    with pytest.raises(ValueError, match="contain NaN"):
        dcwp_global_unstructured(net, {**good, "fc.weight": torch.full((3, 6), float("nan"))})
    with pytest.raises(KeyError, match="no submodule 'head'"):
        dcwp_global_unstructured(net, {"head.weight": torch.rand(2)})
    with pytest.raises(ValueError, match=r"`amount` to be a float in \[0, 1\] or a non-negative int, got 1.5"):
        DCWPMethod(amount=1.5)
    with pytest.raises(ValueError, match="Pass at most one of"):
        DCWPMethod(amount=0.5, threshold=0.5)
    with pytest.raises(ValueError, match="amount=99 is larger than the number of prunable entries"):
        dcwp_unstructured(nn.Linear(3, 2), "weight", torch.rand(2, 3), amount=99)
    with pytest.raises(TypeError, match="FQN-keyed scores need the model"):
        dcwp_global_unstructured([(net.fc, "weight")], good)
    with pytest.raises(ValueError, match=r"`sparsity` to be a float in \[0, 1\], got 2"):
        dcwp_global_unstructured(net, good, sparsity=2)
