"""Launchkit: live-stream a press launch to a flash crowd and keep the servers up."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("launchkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
