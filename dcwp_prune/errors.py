"""The errors dcwp-prune raises for input it cannot use: a bad option, file, folder, model or score.

Every one derives from :class:`DCWPError` and also from the built-in type a caller would expect
(``ValueError``, ``TypeError``, ``KeyError``), so ``except ValueError`` keeps working. The CLI shows
a :class:`DCWPError` (and the OS errors of a bad path) as one line with exit status 2; any other
exception is a bug, shown with its traceback and exit status 1.
"""

from __future__ import annotations

__all__ = ["DCWPError", "InputError", "InputTypeError", "UnknownNameError"]


class DCWPError(Exception):
    """Base of the errors that mean "the input cannot be used as given"; the message says why and the fix."""


class InputError(DCWPError, ValueError):
    """A value, file or combination of options that cannot be used."""


class InputTypeError(DCWPError, TypeError):
    """A value of the wrong type."""


class UnknownNameError(DCWPError, KeyError):
    """An unknown model, dataset, preset or key; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""
