"""Errors of the exporter. All are ``qcfs2lava.util.errors.UserError`` subclasses: the CLI prints one line."""
from __future__ import annotations

from qcfs2lava.util.errors import ConversionError, UserError

__all__ = ["ExportError", "QuantizationError", "NetxFileError", "ConversionError", "UserError"]


class ExportError(ConversionError):
    """The model contains something a NetX network cannot represent (names the module)."""


class QuantizationError(ConversionError):
    """A layer cannot be brought within Loihi's fixed-point limits."""


class NetxFileError(UserError):
    """A NetX HDF5 file is missing, unreadable, or not what the reader expects."""
