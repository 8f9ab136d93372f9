import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished tiny run (mlp, offline CMNIST 5 %) and its config file ``tiny.toml``, made once per
    session; copy it before changing it."""
    from click.testing import CliRunner

    from dcwp_prune.run.cli import main

    from ._data import TINY_TOML

    tmp = tmp_path_factory.mktemp("finished")
    (tmp / "tiny.toml").write_text(TINY_TOML.replace("ratio = 2.0", "ratio = 5.0"))
    result = CliRunner().invoke(
        main,
        ["mlp", "--data", "cmnist", "--config", str(tmp / "tiny.toml"), "--out", str(tmp / "run"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    return tmp
