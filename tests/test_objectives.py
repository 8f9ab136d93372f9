import math

import pytest
import torch

from dcwp_prune.training.objectives import GCELoss, add_sparsity_grad_, gce_loss, sparsity_penalty, supcon_loss


def test_gce_value_and_gradient_against_formula():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    q = 0.7
    p = torch.softmax(logits, 1).gather(1, y.view(-1, 1)).squeeze(1)
    textbook = ((1 - p**q) / q).mean()
    assert torch.allclose(gce_loss(logits, y, q, form="textbook"), textbook)
    official = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * p.detach() ** q * q).mean()
    assert torch.allclose(GCELoss(q)(logits, y), official)
    (g_off,) = torch.autograd.grad(gce_loss(logits, y, q), logits)
    (g_txt,) = torch.autograd.grad(textbook, logits)
    assert torch.allclose(g_off, q * g_txt, atol=1e-6)  # the official form is q x the textbook gradient
    with pytest.raises(ValueError, match=r"GCE q must be in \(0, 1\], got 0"):
        gce_loss(logits, y, 0.0)


def _hand_supcon(z, y, flags, t, symmetric):
    z = torch.nn.functional.normalize(z, dim=1)
    n, losses = len(y), []
    for i in range(n):
        pos = [j for j in range(n) if j != i and y[j] == y[i] and (flags[j] or (symmetric and flags[i]))]
        if not pos:
            continue
        denom = math.log(sum(math.exp(float(z[i] @ z[a]) / t) for a in range(n) if a != i))
        losses.append(-sum(float(z[i] @ z[p]) / t - denom for p in pos) / len(pos))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("positives", ["official", "symmetric"])
def test_supcon_against_hand_computation(positives):
    torch.manual_seed(1)
    z = torch.randn(7, 5)
    y = torch.tensor([0, 0, 1, 1, 0, 1, 2])
    flags = torch.tensor([0, 1, 0, 0, 0, 1, 1])
    got = supcon_loss(z, y, flags, temperature=0.5, positives=positives)
    expected = _hand_supcon(z, y, flags, 0.5, positives == "symmetric")
    assert abs(float(got) - expected) < 1e-4


def test_supcon_masks_differ_and_no_positive_is_zero_not_nan():
    z = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    flags = torch.tensor([1, 0, 0, 0])
    # official: only anchor 1 has a positive (j=0 flagged); symmetric: anchors 0 and 1
    official = supcon_loss(z, y, flags, positives="official").detach()
    assert float(official) != float(supcon_loss(z, y, flags, positives="symmetric").detach())
    zero = supcon_loss(z, y, torch.zeros(4))
    assert float(zero) == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    with pytest.raises(ValueError, match=r"positives must be one of \('official', 'symmetric'\)"):
        supcon_loss(z, y, flags, positives="both")


def test_sparsity_penalty_is_sum_of_logits():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])
    assert float(sparsity_penalty([a, b])) == -0.5


def test_in_place_sparsity_gradient_equals_autograd():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    (a.sum() * 2).backward()
    add_sparsity_grad_([a, b], 1e-3)
    ref_a = torch.randn(3, 4, requires_grad=True)
    ref_b = torch.randn(5, requires_grad=True)
    (ref_a.sum() * 2 + 1e-3 * sparsity_penalty([ref_a, ref_b])).backward()
    assert torch.equal(a.grad, ref_a.grad) and torch.equal(b.grad, ref_b.grad)
