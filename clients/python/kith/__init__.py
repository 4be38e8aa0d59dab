"""Kith from Python: ``kith.Client(url, token=...)`` (and ``kith.AsyncClient``), with numpy arrays
in and out and every API error code as an exception class."""

from ._client import Added, AsyncClient, Client, EvalResult, Neighbours, Prediction, SearchResults
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors

__all__ = ["Client", "AsyncClient", "Added", "EvalResult", "Neighbours", "Prediction", "SearchResults"] + list(_errors)
# The version, in one place: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.1.0"
