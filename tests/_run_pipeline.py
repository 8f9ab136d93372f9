"""Runs ``run_dcwp`` on a config JSON file: a subprocess target for the resume and torchrun tests."""

import json
import os
import sys

from dcwp_prune.run.config import RunConfig
from dcwp_prune.run.pipeline import run_dcwp

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        config = RunConfig.from_dict(json.load(f))
    result = run_dcwp(config)
    print(f"rank {os.environ.get('RANK', '0')}: run_dir {result.run_dir}")
