"""DeNetDM's mechanism on tiny data: stage 2 leaves the bias branch unchanged and distils the stage-1 expert."""

import copy

import pytest
import torch

from benchmarks.denetdm import distillation_loss, shallow_branch, train_experts, train_target
from dcwp_prune.models import create_model
from dcwp_prune.training.engine import Runtime


def _batches(n=16):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 28, 28, generator=g), torch.arange(n) % 10
    while True:
        yield x, y, y, [str(i) for i in range(n)]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_stage_two_trains_the_target_beside_the_frozen_bias_branch_and_distils_the_stage_one_expert(arch, monkeypatch):
    import benchmarks.denetdm as dn

    torch.manual_seed(0)
    rt = Runtime(progress=False)
    experts = train_experts(lambda: create_model(arch, 10), arch, _batches(), 3, rt)
    frozen = copy.deepcopy(experts.state_dict())
    seen = []
    real = dn.distillation_loss

    def spy(student, teacher, temperature):
        seen.append(teacher.clone())
        return real(student, teacher, temperature)

    monkeypatch.setattr(dn, "distillation_loss", spy)
    target = train_target(experts, lambda: create_model(arch, 10), _batches(), 3, rt)
    after = experts.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # deep, shallow and stage-1 head untouched
    x = next(_batches())[0]
    with torch.no_grad():
        assert torch.allclose(seen[0], experts.head(experts.shallow(x)))  # the teacher: shallow branch + its head
    assert type(target) is type(create_model(arch, 10)) and target(x).shape == (16, 10)
    assert not torch.equal(target.fc.weight, experts.head.weight)  # the head trained on in stage 2


def test_the_shallow_branch_is_two_layers_shallower_with_the_same_feature_width():
    x = torch.rand(2, 3, 28, 28)
    assert shallow_branch("mlp", 100)(x).shape == (2, 100)
    assert shallow_branch("cnn", 256)(x).shape == (2, 256)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    expected = -(torch.softmax(t / 2, 1) * torch.log_softmax(s / 2, 1)).sum(1).mean() * 4
    assert torch.allclose(distillation_loss(s, t, 2.0), expected)
