import pytest
import torch
from torch import nn

from dcwp_prune import GumbelSigmoidMask, MaskScores, attach_masks, detach_masks, set_mask_mode
from dcwp_prune.training.masking import unmasked_state_dict
from tests._models import TinyCNN


def _mask(logit, mode="sample", variant="official"):
    return GumbelSigmoidMask(nn.Parameter(torch.full((20000,), float(logit))), mode, variant)


@pytest.mark.parametrize(
    "logit,variant,expected",
    [(1.5, "official", 0.6943), (0.0, "official", 0.6225), (-10.0, "official", 0.5000),
     (1.5, "clean", 0.8176), (-2.0, "clean", 0.1192)],
)
def test_sample_keep_probability(logit, variant, expected):
    m = _mask(logit, variant=variant)
    draws = torch.stack([m.mask() for _ in range(20)])
    assert set(draws.detach().unique().tolist()) <= {0.0, 1.0}
    assert abs(float(draws.mean()) - expected) < 0.01


@pytest.mark.parametrize("variant,t", [("clean", 1.0), ("official", 1.0), ("official", 0.5)])
def test_straight_through_forward_is_hard_backward_is_soft(variant, t):
    logit = nn.Parameter(torch.linspace(-3, 3, 1000))
    m = GumbelSigmoidMask(logit, variant=variant, temperature=t)
    torch.manual_seed(3)
    hard = m.mask()
    (hard * torch.arange(1000.0)).sum().backward()
    torch.manual_seed(3)
    ref = logit.detach().clone().requires_grad_(True)
    u = torch.rand_like(ref).clamp(1e-10, 1 - 1e-7)
    s = torch.sigmoid(ref) if variant == "official" else ref
    soft = torch.sigmoid((s + torch.log(u) - torch.log1p(-u)) / t)
    (soft * torch.arange(1000.0)).sum().backward()
    assert torch.equal(hard, (soft > 0.5).float().detach())
    assert torch.allclose(logit.grad, ref.grad, rtol=1e-4, atol=1e-7)


def test_deterministic_soft_and_eval_fallback():
    m = GumbelSigmoidMask(nn.Parameter(torch.tensor([0.0, -0.1, 2.0])), mode="deterministic")
    assert m.mask().tolist() == [1.0, 0.0, 1.0]
    m.mode = "soft"
    assert torch.allclose(m.mask(), torch.sigmoid(torch.tensor([0.0, -0.1, 2.0])))
    m.mode = "sample"
    m.eval()
    assert m.mask().tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="mask mode must be one of"):
        GumbelSigmoidMask(m.logit, mode="random")


def test_attach_freezes_weights_learns_logits_and_detach_restores():
    net = TinyCNN()
    original = {k: v.clone() for k, v in net.state_dict().items()}
    weight_obj = net.conv1.weight
    scores = MaskScores.from_model(net)
    attach_masks(net, scores, mode="sample")
    assert not any(p.requires_grad for n, p in net.named_parameters() if not n.endswith(".logit"))
    opt = torch.optim.Adam(scores.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3, 8, 8)).sum().backward()
        opt.step()
    assert any(not torch.equal(p.detach(), torch.full_like(p, 1.5)) for p in scores.parameters())
    set_mask_mode(net, "deterministic")
    with torch.no_grad():
        scores["conv1.weight"][0] = -1.0
    assert torch.equal(net.conv1.weight[0], torch.zeros_like(net.conv1.weight[0]))
    sd = unmasked_state_dict(net)
    assert set(sd) == set(original)
    detach_masks(net)
    assert net.conv1.weight is weight_obj and type(net.conv1) is nn.Conv2d
    assert all(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, original[k]), k


def test_attach_errors():
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    attach_masks(net, scores)
    with pytest.raises(RuntimeError, match="already attached"):
        attach_masks(net, scores)
    detach_masks(net)
    with pytest.raises(RuntimeError, match="no masks are attached"):
        set_mask_mode(net, "soft")
    from torch.nn.utils import prune

    prune.identity(net.fc, "weight")
    with pytest.raises(RuntimeError, match=r"pruned with torch.nn.utils.prune; call prune.remove"):
        attach_masks(net, scores)
