"""Logit Correction's mechanism on tiny tensors: the matrix update, the corrected logits, the mixup."""

import math

import torch

from benchmarks.lc import CorrectionMatrix, corrected_logits, group_mixup, train_lc


def test_the_matrix_stores_a_first_visit_and_then_moves_by_one_minus_alpha():
    m = CorrectionMatrix(3, alpha=0.9)
    m.update(torch.tensor([0, 0, 1]), torch.tensor([2, 2, 1]), torch.tensor([0.5, 0.1, 0.8]))
    assert math.isclose(float(m.value[0, 2]), 0.9 * 0.5 + 0.1 * 0.1, abs_tol=1e-7)  # sample by sample, in order
    assert float(m.value[1, 1]) == float(torch.tensor(0.8)) and int(m.visited.sum()) == 2
    assert torch.equal(m.prior(torch.tensor([2, 1])), torch.stack([m.value[:, 2], m.value[:, 1]]))


def test_corrected_logits_differ_from_the_raw_ones_by_the_log_prior():
    z = torch.randn(4, 3)
    prior = torch.rand(4, 3)
    assert torch.allclose(corrected_logits(z, prior) - z, torch.log(prior + 1e-4))
    # a sample whose class the biased model explains (prior ~ 1) keeps its logit; an unexplained one loses log(1e-4)
    out = corrected_logits(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert abs(float(out[0, 0])) < 1e-3 and math.isclose(float(out[0, 1]), math.log(1e-4), rel_tol=1e-6)


def test_group_mixup_pairs_each_sample_with_a_same_class_sample_the_biased_model_gets_wrong():
    y = torch.tensor([0, 0, 0, 1, 1])
    b = torch.tensor([0, 2, 0, 1, 1])  # class 0: sample 1 is the only pseudo-minority; class 1 has none
    x = torch.arange(5.0).view(5, 1) * 10
    prior = torch.eye(5)[:, :3] + 0.0
    x_mix, prior_mix = group_mixup(x, y, b, prior, 0.25, torch.Generator().manual_seed(0))
    for i in (0, 1, 2):
        assert float(x_mix[i]) == 0.25 * float(x[i]) + 0.75 * 10.0  # partner: sample 1
        assert torch.allclose(prior_mix[i], 0.25 * prior[i] + 0.75 * prior[1])
    for i in (3, 4):
        assert float(x_mix[i]) in {0.25 * float(x[i]) + 0.75 * float(x[j]) for j in (3, 4)}  # a same-class sample


def test_lc_trains_and_leaves_the_biased_model_to_gce():
    from dcwp_prune.training.engine import Runtime

    torch.manual_seed(0)
    model_d, model_b = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    x, y = torch.randn(12, 6), torch.arange(12) % 3

    def batches():
        while True:
            yield x, y, y, [str(i) for i in range(12)]

    before = {k: v.clone() for k, v in model_b.state_dict().items()}
    matrix = train_lc(model_d, model_b, batches(), 3, 5, Runtime(progress=False), seed=1)
    assert matrix.visited.any() and any(not torch.equal(before[k], v) for k, v in model_b.state_dict().items())
    assert torch.isfinite(model_d.weight).all()
