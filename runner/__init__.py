"""The runner: processes, files and the command line. It imports every other layer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ai-coding-control-plane")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
