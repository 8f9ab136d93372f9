"""``python -m dcwp_prune ...``: the ``dcwp-prune`` command (e.g. under ``torchrun``)."""

from .run.cli import main

if __name__ == "__main__":
    main()
