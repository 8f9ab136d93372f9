import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from dcwp_prune import DCWPImportance, MaskScores, attach_masks, detach_masks
from dcwp_prune.adapters.torch_pruning import DCWPScoreShapeError
from tests._models import FlattenNet, GroupedNet, TinyCNN


def _group(net, x, layer):
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=x)
    return dg.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=list(range(layer.out_channels)))


def test_importance_is_kept_fraction_of_coupled_weights():
    net = TinyCNN()
    probs = {"conv1.weight": torch.rand(8, 3, 3, 3), "conv2.weight": torch.rand(6, 8, 3, 3)}
    imp = DCWPImportance({**probs, "fc.weight": torch.rand(3, 6)}, model=net)
    got = imp(_group(net, torch.randn(1, 3, 8, 8), net.conv1))
    # channel c of conv1: its 27 output-row weights + the 54 weights of conv2 that read it
    expected = (probs["conv1.weight"].flatten(1).sum(1) + probs["conv2.weight"].transpose(0, 1).flatten(1).sum(1)) / 81
    best = int(expected.argmax())
    expected[best] += 2.0  # min_keep protection
    assert got.dtype == torch.float64
    assert torch.allclose(got.float(), expected, atol=1e-6)


@pytest.mark.parametrize("normalizer", ["mean", "max"])
def test_normalizer_divides_each_group_by_its_mean_or_max(normalizer):
    net = TinyCNN()
    probs = {
        "conv1.weight": torch.rand(8, 3, 3, 3),
        "conv2.weight": torch.rand(6, 8, 3, 3),
        "fc.weight": torch.rand(3, 6),
    }
    group = _group(net, torch.randn(1, 3, 8, 8), net.conv1)
    plain = DCWPImportance(probs, model=net, min_keep=0)(group).float()
    got = DCWPImportance(probs, model=net, min_keep=0, normalizer=normalizer)(group).float()
    scale = plain.mean() if normalizer == "mean" else plain.max()
    assert torch.allclose(got, plain / scale, atol=1e-6)
    # the protected channel stays above any normalised importance
    protected = DCWPImportance(probs, model=net, normalizer=normalizer)(group)
    assert protected.max() > 1e5 and int(protected.argmax()) == int(plain.argmax())
    with pytest.raises(ValueError, match="normalizer must be one of .* got 'sum'"):
        DCWPImportance(probs, model=net, normalizer="sum")


def test_mean_normalizer_ranks_channels_against_their_own_layer():
    """Without normalising, a layer whose weights DCWP keeps less loses the most channels globally."""
    from dcwp_prune import prune_channels

    net = TinyCNN()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        scores["conv1.weight"].uniform_(2.0, 4.0)  # every conv1 channel kept with high probability
        scores["conv2.weight"].uniform_(-1.0, 1.0)  # conv2 about half
    x = torch.randn(1, 3, 8, 8)
    plain = prune_channels(copy.deepcopy(net), scores, x, 0.4, ignored_layers=[net.fc], global_pruning=True).channels
    normed = prune_channels(
        copy.deepcopy(net), scores, x, 0.4, ignored_layers=[net.fc], global_pruning=True, normalizer="mean"
    ).channels
    lost = {name: {k: v[0] - v[1] for k, v in ch.items()} for name, ch in (("plain", plain), ("normed", normed))}
    # unnormalised, the global cut takes mostly conv2 (its weights are kept less); normalised, each channel is
    # ranked against its own layer and conv1 gives up more of its relatively weak channels
    assert lost["plain"].get("conv2", 0) > lost["normed"].get("conv2", 0)
    assert lost["normed"].get("conv1", 0) > lost["plain"].get("conv1", 0)
    # the default ranks within each layer, where dividing a layer by its own mean changes nothing: refused
    with pytest.raises(ValueError, match="normalizer='mean' divides each layer's .* pass global_pruning=True"):
        prune_channels(copy.deepcopy(net), scores, x, 0.4, ignored_layers=[net.fc], normalizer="mean")
    local = prune_channels(copy.deepcopy(net), scores, x, 0.4, ignored_layers=[net.fc]).channels
    assert local == {"conv1": [8, 4], "conv2": [6, 3]}  # every layer keeps int(60 %) of its channels (Torch-Pruning)


def test_flatten_expansion_weights_each_input_once():
    net = FlattenNet()
    p_conv = torch.rand(4, 2, 3, 3)
    p_fc1 = torch.rand(5, 16)
    imp = DCWPImportance({"conv.weight": p_conv, "fc1.weight": p_fc1}, model=net, min_keep=0)
    got = imp(_group(net, torch.randn(1, 2, 2, 2), net.conv))
    cols = p_fc1.view(5, 4, 4).permute(1, 0, 2).reshape(4, -1)  # channel c owns fc1 inputs 4c..4c+3
    expected = (p_conv.flatten(1).sum(1) + cols.sum(1)) / (18 + 20)
    assert torch.allclose(got.float(), expected, atol=1e-6)


@pytest.mark.parametrize("global_pruning", [True, False])
def test_prunes_exactly_the_lowest_channels(global_pruning):
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    drop = [1, 4, 6, 7]
    with torch.no_grad():
        scores["conv1.weight"][drop] = -4.0
        scores["conv2.weight"][:] = 3.0
        scores["conv2.weight"][[0, 3, 5]] = -3.0
    keep_weights = net.conv1.weight.detach()[[0, 2, 3, 5]].clone()
    pruner = tp.pruner.BasePruner(
        net,
        torch.randn(1, 3, 8, 8),
        importance=DCWPImportance(scores),
        pruning_ratio=0.5,
        global_pruning=global_pruning,
        ignored_layers=[net.fc],
    )
    pruner.step()
    assert net.conv1.out_channels == 4
    assert torch.equal(net.conv1.weight.detach(), keep_weights)
    assert net.conv2.out_channels == 3
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_exact_ties_do_not_over_prune_globally():
    net = TinyCNN()  # every logit at its 1.5 init: all 14 channels tie
    pruner = tp.pruner.BasePruner(
        net,
        torch.randn(1, 3, 8, 8),
        importance=DCWPImportance(MaskScores.from_model(net)),
        pruning_ratio=0.5,
        global_pruning=True,
        ignored_layers=[net.fc],
    )
    pruner.step()
    assert net.conv1.out_channels + net.conv2.out_channels == 7


def test_grouped_depthwise_transposed_run_and_shapes():
    net = GroupedNet()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    x = torch.randn(1, 3, 8, 8)
    pruner = tp.pruner.BasePruner(net, x, importance=DCWPImportance(scores), pruning_ratio=0.5, ignored_layers=[net.fc])
    pruner.step()
    assert net(x).shape == (1, 2)
    assert net.c1.out_channels < 8 and net.grouped.groups == 2 and net.c1.out_channels % 2 == 0


def test_grouped_conv_input_rows_are_exact():
    from dcwp_prune.adapters.torch_pruning import _conv_rows

    conv = nn.Conv2d(4, 6, 1, groups=2)
    p = torch.arange(12.0).view(6, 2, 1, 1)
    rows = _conv_rows(conv, p, out=False)
    # input channel 0 (group 0, local 0) is read by outputs 0..2 at local position 0
    assert rows.tolist() == [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]]


def test_traps_raise():
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    net.requires_grad_(False)
    with pytest.raises(RuntimeError, match=r"frozen weight \(requires_grad=False\).*requires_grad_\(True\)"):
        DCWPImportance(scores)
    net.requires_grad_(True)
    attach_masks(net, scores)
    with pytest.raises(RuntimeError, match="still carries a torch.nn.utils.prune hook or a parametrization"):
        DCWPImportance(scores)
    detach_masks(net)
    prune.identity(net.conv1, "weight")
    with pytest.raises(RuntimeError, match="still carries"):
        DCWPImportance(scores)


def test_input_errors():
    net = TinyCNN()
    pending = DCWPImportance({"conv1.weight": torch.rand(8, 3, 3, 3)})  # resolved later, in the pruner's graph
    with pytest.raises(ValueError, match="scores keyed by FQN need the model"):
        pending(type("GroupWithoutGraph", (), {"items": []})())
    with pytest.raises(DCWPScoreShapeError, match=r"scores for 'conv1.weight' have shape \(8,\)"):
        DCWPImportance({"conv1.weight": torch.rand(8)}, model=net)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]; pass scores_are_logits=True"):
        DCWPImportance({"conv1.weight": torch.randn(8, 3, 3, 3) * 5}, model=net)
    with pytest.raises(TypeError, match="scores must be MaskScores or a dict"):
        DCWPImportance([1, 2])


def test_plain_dict_without_model_works_inside_a_pruner():
    """What safetensors.torch.load_file returns: {fqn: tensor}. The pruner's graph knows the names."""
    torch.manual_seed(0)
    net, ref = TinyCNN(), TinyCNN()
    ref.load_state_dict(net.state_dict())
    probs = {
        "conv1.weight": torch.rand(8, 3, 3, 3),
        "conv2.weight": torch.rand(6, 8, 3, 3),
        "fc.weight": torch.rand(3, 6),
    }
    x = torch.randn(1, 3, 8, 8)
    for model, imp in ((net, DCWPImportance(probs)), (ref, DCWPImportance(probs, model=ref))):
        tp.pruner.BasePruner(model, x, importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc]).step()
    assert net.conv1.out_channels == ref.conv1.out_channels == 4
    assert torch.equal(net.conv1.weight, ref.conv1.weight) and torch.equal(net.conv2.weight, ref.conv2.weight)
    with pytest.raises(KeyError, match="no submodule 'nope'"):
        tp.pruner.BasePruner(
            TinyCNN(), x, importance=DCWPImportance({"nope.weight": torch.rand(2)}), pruning_ratio=0.5
        ).step()


@pytest.mark.parametrize("driver", ["public", "bare"])
def test_iterative_steps_follow_the_removed_channels(driver, monkeypatch):
    """5 steps reach the target; at every step the scores are the original ones of the surviving
    channels, and each step removes the surviving channels with the lowest kept fraction. ``imp.step(pruner)``
    does it on Torch-Pruning's public API alone (the private path made to fail); a bare ``pruner.step()`` too."""
    if driver == "public":

        def private(*args, **kwargs):
            raise AssertionError("step(pruner) touched Torch-Pruning's internals")

        monkeypatch.setattr(DCWPImportance, "_follow_privately", private)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 20, 3), nn.ReLU(), nn.Conv2d(20, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 3, 8, 8)
    net(x)
    with torch.no_grad():  # tag each filter of layer 0 with its original index
        net[0].weight.copy_(torch.arange(20.0).view(20, 1, 1, 1).expand_as(net[0].weight) + 1)
    keep = torch.rand(20, 3, 3, 3)
    imp = DCWPImportance({"0.weight": keep}, model=net, min_keep=0)
    pruner = tp.pruner.BasePruner(
        net, x, importance=imp, pruning_ratio=0.5, iterative_steps=5, ignored_layers=[net[2], net[4]]
    )
    fraction = keep.flatten(1).mean(1)
    alive = list(range(20))
    for step in range(5):
        if driver == "public":
            assert imp.step(pruner) == 1
        else:
            pruner.step()
        now = [int(v) - 1 for v in net[0].weight[:, 0, 0, 0].tolist()]  # original indices still there
        removed = sorted(set(alive) - set(now))
        lowest = sorted(sorted(alive, key=lambda i: float(fraction[i]))[: len(removed)])
        assert removed == lowest, f"step {step + 1}"
        assert torch.equal(imp._keep[(net[0], "weight")], keep[now])
        alive = now
    assert net[0].out_channels == 10 and net(x).shape == (1, 2)


def test_public_step_takes_plain_dicts_and_refuses_another_pruner():
    """step(pruner) binds FQN-keyed scores in the pruner's model (no model= needed) and prunes what a bare step
    prunes; a pruner built with another importance is refused by name."""
    torch.manual_seed(0)
    net, ref = TinyCNN(), TinyCNN()
    ref.load_state_dict(net.state_dict())
    probs = {"conv1.weight": torch.rand(8, 3, 3, 3), "conv2.weight": torch.rand(6, 8, 3, 3)}
    x = torch.randn(1, 3, 8, 8)
    imp = DCWPImportance(probs)
    pruner = tp.pruner.BasePruner(net, x, importance=imp, pruning_ratio=0.5, ignored_layers=[net.fc])
    assert imp.step(pruner) == 2
    tp.pruner.BasePruner(ref, x, importance=DCWPImportance(probs), pruning_ratio=0.5, ignored_layers=[ref.fc]).step()
    assert torch.equal(net.conv1.weight, ref.conv1.weight) and torch.equal(net.conv2.weight, ref.conv2.weight)
    other = tp.pruner.BasePruner(TinyCNN(), x, importance=tp.importance.MagnitudeImportance(), pruning_ratio=0.5)
    with pytest.raises(ValueError, match=r"needs a pruner built with this importance"):
        DCWPImportance(probs).step(other)
    with pytest.raises(RuntimeError, match="already serves another pruner"):
        imp.step(tp.pruner.BasePruner(ref, x, importance=imp, pruning_ratio=0.5, ignored_layers=[ref.fc]))


def test_one_importance_serves_one_pruner():
    net = TinyCNN()
    x = torch.randn(1, 3, 8, 8)
    imp = DCWPImportance(MaskScores.from_model(net))
    tp.pruner.BasePruner(net, x, importance=imp, pruning_ratio=0.25, ignored_layers=[net.fc]).step()
    with pytest.raises(RuntimeError, match="already serves another pruner"):
        tp.pruner.BasePruner(net, x, importance=imp, pruning_ratio=0.25, ignored_layers=[net.fc]).step()
    other = TinyCNN()
    stale = DCWPImportance(MaskScores.from_model(other))
    _group(other, x, other.conv1).prune(idxs=[0, 1])  # pruned by a graph the importance does not follow
    with pytest.raises(DCWPScoreShapeError, match="pruned outside the pruner"):
        tp.pruner.BasePruner(other, x, importance=stale, pruning_ratio=0.25, ignored_layers=[other.fc]).step()


def test_unsupported_architecture_refused_up_front():
    import torchvision

    from dcwp_prune.adapters.torch_pruning import UnsupportedModelError

    model = torchvision.models.get_model("shufflenet_v2_x0_5", num_classes=3)
    with pytest.raises(UnsupportedModelError, match="does not support ShuffleNetV2"):
        DCWPImportance(MaskScores.from_model(model))


def test_scores_bound_to_another_instance_are_matched_by_name():
    """MaskScores of one model, a pruner on its deepcopy: the same channels go (it used to prune nothing)."""
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        scores["conv1.weight"][[1, 4, 6, 7]] = -4.0
        scores["conv2.weight"][:] = 3.0
        scores["conv2.weight"][[0, 3, 5]] = -3.0
    twin = copy.deepcopy(net)
    keep_weights = twin.conv1.weight.detach()[[0, 2, 3, 5]].clone()
    pruner = tp.pruner.BasePruner(
        twin, torch.randn(1, 3, 8, 8), importance=DCWPImportance(scores), pruning_ratio=0.5, ignored_layers=[twin.fc]
    )
    pruner.step()
    assert twin.conv1.out_channels == 4 and torch.equal(twin.conv1.weight.detach(), keep_weights)
    assert twin.conv2.out_channels == 3 and net.conv1.out_channels == 8  # the scores' own model is untouched


def test_scores_keyed_by_another_models_modules_are_refused():
    net, other = TinyCNN(), TinyCNN()
    imp = DCWPImportance({other.conv1: torch.rand(8, 3, 3, 3)})
    pruner = tp.pruner.BasePruner(
        net, torch.randn(1, 3, 8, 8), importance=imp, pruning_ratio=0.5, ignored_layers=[net.fc]
    )
    with pytest.raises(ValueError, match="belong to another model instance"):
        pruner.step()


def test_the_torch_pruning_internals_the_importance_relies_on_still_exist():
    """A bare ``pruner.step()`` (not ``DCWPImportance.step``) follows iterative schedules through names that are not
    Torch-Pruning's public API (``DependencyGraph.get_pruning_group`` returning a group with ``_DG`` and a
    ``prune(idxs, record_history)``); they hold in the pinned 1.6 series. This fails loudly, naming them, when an
    upgrade moves them. The public path needs ``pruner.step(interactive=True)``, ``group.items``, ``group.prune()``.
    """
    import inspect

    import torch_pruning as tp
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 4))
    assert callable(getattr(graph, "get_pruning_group", None)), "DependencyGraph.get_pruning_group moved"
    group = graph.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[0])
    assert getattr(group, "_DG", None) is graph, "a pruning group no longer carries its graph as _DG"
    assert list(inspect.signature(group.prune).parameters)[:2] == ["idxs", "record_history"], "Group.prune changed"
    assert "interactive" in inspect.signature(tp.pruner.BasePruner.step).parameters, "pruner.step(interactive=) moved"
