"""corral: one CPU budget for every layer of parallelism in a Python program."""

from . import _core

__version__ = _core.__version__

__all__ = ["__version__"]
