"""Smoke run of the Python-API example on tiny data."""

from tests.test_examples import run_example


def test_debias_your_model_example():
    out = run_example("examples/debias_your_model.py", "--tiny")
    assert "vanilla   test accuracy" in out and "DCWP      test accuracy" in out and "mined" in out
