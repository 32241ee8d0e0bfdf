"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, an unsupported layer."""


class DataError(UserError):
    """A data set is missing or malformed on disk."""


class CheckpointError(UserError):
    """A checkpoint file cannot be read or is not a qcfs2lava checkpoint."""


class ConversionError(UserError):
    """A model contains something the ANN-to-SNN conversion cannot represent."""
