"""The one error type the batch command reports to the user before anything is queued."""


class BatchInputError(ValueError):
    """Bad input: the message names the flag or file and the fix. The command exits with code 2."""
