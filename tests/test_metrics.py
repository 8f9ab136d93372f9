import pytest
import torch

from dcwp_prune.metrics import BiasGroupAccuracy, bias_group_accuracy


def test_against_hand_computed_matrix():
    # groups (y, b): (0,0) 3 samples 2 right; (0,1) 2 samples 1 right; (1,1) 4 samples 4 right; (1,0) 1 sample 0 right
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    biases = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 0])
    preds = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1, 1, 0])
    m = bias_group_accuracy(preds, labels, biases, 2)
    assert m["group_counts"] == [[3, 2], [1, 4]]
    assert m["group_accuracy"] == [[2 / 3, 0.5], [0.0, 1.0]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["aligned"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["conflicting"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["conflicting_pooled"] == pytest.approx(1 / 3)
    assert m["unbiased"] == pytest.approx((2 / 3 + 0.5 + 0 + 1) / 4)
    assert m["worst_group"] == 0.0


def test_empty_groups_are_missing_not_zero():
    m = bias_group_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]), 3)
    assert m["group_accuracy"][0][1] is None and m["conflicting"] is None and m["conflicting_pooled"] is None
    assert m["unbiased"] == 1.0 and m["worst_group"] == 1.0


def test_update_accumulates_logits_and_merge_equals_single_pass():
    torch.manual_seed(0)
    logits = torch.randn(40, 4)
    labels, biases = torch.randint(0, 4, (40,)), torch.randint(0, 4, (40,))
    whole = bias_group_accuracy(logits, labels, biases, 4)
    a, b = BiasGroupAccuracy(4), BiasGroupAccuracy(4)
    a.update(logits[:25], labels[:25], biases[:25])
    b.update(logits[25:], labels[25:], biases[25:])
    a.merge(b)
    assert a.compute() == whole
    a.reset()
    assert a.compute()["accuracy"] is None
    state = b.state_dict()
    c = BiasGroupAccuracy(4)
    c.load_state_dict(state)
    assert c.compute() == b.compute()


def test_errors():
    with pytest.raises(ValueError, match=r"labels must lie in 0..1 for num_classes=2, got 0..2"):
        bias_group_accuracy(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="one entry per sample"):
        bias_group_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="cannot merge 3-class counts into 2-class counts"):
        BiasGroupAccuracy(2).merge(BiasGroupAccuracy(3))
