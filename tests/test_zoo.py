"""The plugin on torchvision's classification zoo: a fast subset here, the README list from the full run.

The full zoo (every model, local and global) is ``python -m benchmarks.zoo``; it writes
``benchmarks/results/zoo.json`` and the README list. This test checks a fast subset with the same
checks, and that the README list is exactly the rendering of ``zoo.json``.
"""

import json
import re

import pytest

from benchmarks.zoo import PAGE, RESULTS, check_model, classification_models, render
from dcwp_prune.adapters.torch_pruning import UNSUPPORTED_ARCHITECTURES

FAST = ["resnet18", "squeezenet1_1", "mobilenet_v3_small", "mnasnet0_5", "shufflenet_v2_x0_5", "swin_t"]


@pytest.mark.parametrize("global_pruning", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("name", FAST)
def test_zoo_subset(name, global_pruning):
    r = check_model(name, global_pruning)
    if name.startswith(("shufflenet", "swin")):
        assert r["status"] == "refused" and r["reason"] in UNSUPPORTED_ARCHITECTURES.values()
        return
    assert r["status"] == "pruned", r
    assert r["output_shape_unchanged"] and r["backward"] and r["macs_reduced"] and r["params_reduced"]
    assert r["lowest_removed"] is True


def test_readme_list_is_the_zoo_run():
    with open(RESULTS) as f:
        data = json.load(f)
    results = data["results"]
    assert {r["model"] for r in results} == set(classification_models())
    assert all(r["reason"] in UNSUPPORTED_ARCHITECTURES.values() for r in results if r["status"] == "refused")
    with open(PAGE) as f:
        block = re.search(r"<!-- figures:zoo -->\n(.*?)<!-- /figures:zoo -->", f.read(), re.S).group(1)
    assert block == render(results), "docs/python-api.md list is stale: run python -m benchmarks.zoo --readme"
