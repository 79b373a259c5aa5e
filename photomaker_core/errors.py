"""Exception types shared across the library. Every message says what is wrong and how to fix it."""


class PhotoMakerError(Exception):
    """Base class for every error this library raises on bad input."""


class PhotoMakerFileError(PhotoMakerError, ValueError):
    """A weight file that cannot be read, or that is not a PhotoMaker file."""


class IdentityError(PhotoMakerError, ValueError):
    """Identity tokens that don't fit the encoder or the prompt."""
