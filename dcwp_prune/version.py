"""Single source of the package version (read by setup.cfg via ``attr:``)."""

__version__ = "0.1.0"
