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
    [
        (1.5, "official", 0.6943),
        (0.0, "official", 0.6225),
        (-10.0, "official", 0.5000),
        (1.5, "clean", 0.8176),
        (-2.0, "clean", 0.1192),
    ],
)
def test_sample_keep_probability(logit, variant, expected):
    m = _mask(logit, variant=variant)
    draws = torch.stack([m.mask() for _ in range(20)])
    assert set(draws.detach().unique().tolist()) <= {0.0, 1.0}
    assert abs(float(draws.mean()) - expected) < 0.01


@pytest.mark.parametrize("variant,t", [("clean", 1.0), ("official", 1.0), ("official", 0.5), ("clean", 2.0)])
def test_straight_through_forward_is_hard_backward_is_soft(variant, t):
    """Same uniforms: the hard draw is the soft sample's threshold, the gradient the soft sample's
    (checked against the textbook form in float64)."""
    logit = nn.Parameter(torch.linspace(-3, 3, 1000))
    m = GumbelSigmoidMask(logit, variant=variant, temperature=t)
    torch.manual_seed(3)
    hard = m.mask()
    (hard * torch.arange(1000.0)).sum().backward()
    torch.manual_seed(3)
    u = torch.rand(1000).clamp(1e-10, 1 - 1e-7).double()
    ref = logit.detach().double().requires_grad_(True)
    s = torch.sigmoid(ref) if variant == "official" else ref
    soft = torch.sigmoid((s + torch.log(u) - torch.log1p(-u)) / t)
    (soft * torch.arange(1000.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(hard.double(), (soft > 0.5).double().detach())
    # t = 1 takes no logarithm (rational form): closer to float64 than the float32 textbook form (~3e-4);
    # other t take the logarithms in float32, with soft (1 - soft) as sigmoid(x) sigmoid(-x) (no cancellation)
    tol = dict(rtol=1e-5, atol=1e-7) if t == 1.0 else dict(rtol=1e-4, atol=1e-7)
    assert torch.allclose(logit.grad.double(), ref.grad, **tol)


@pytest.mark.parametrize("variant", ["clean", "official"])
def test_straight_through_gradient_is_finite_at_extreme_logits(variant):
    """p = sigmoid(s) rounds to exactly 0 or 1 in float32 far from zero: no 0 / 0 in the derivative."""
    logit = nn.Parameter(torch.tensor([-200.0, -30.0, -17.0, 0.0, 17.0, 30.0, 200.0]).repeat(2000))
    m = GumbelSigmoidMask(logit, variant=variant)
    (m.mask() * 3.0).sum().backward()
    assert torch.isfinite(logit.grad).all() and (logit.grad >= 0).all()
    if variant == "clean":  # keep probability 0 and 1 at the ends, exactly
        hard = m.mask().view(2000, 7)
        assert (hard[:, 0] == 0).all() and (hard[:, -1] == 1).all()


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
