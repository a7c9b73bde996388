"""caseloop: consumer complaints handled end to end by email."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("caseloop")
except PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "0+unknown"
