"""Errors a node shows the user: '<Node> - input '<name>': <what is wrong> <the fix>'.

Library errors (photomaker_core.errors.PhotoMakerError and its subclasses) know what is wrong but
not which socket it came through; a node wraps each library call in `input_errors(node, input)`,
which re-raises them as NodeInputError naming that input. This is the only place that conversion
happens."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..photomaker_core.errors import PhotoMakerError


class NodeInputError(PhotoMakerError, ValueError):
    """Bad input, reported to the user as: '<Node> - input '<name>': <what> <fix>'."""

    def __init__(self, node: str, input_name: str, message: str):
        super().__init__(f"{node} - input '{input_name}': {message}")
        self.node = node
        self.input_name = input_name


@contextmanager
def input_errors(node: str, input_name: str | Callable[[Exception], str],
                 catch: type[Exception] | tuple[type[Exception], ...] = PhotoMakerError,
                 message: Callable[[Exception], str] = str) -> Iterator[None]:
    """Errors of type `catch` raised inside become NodeInputError(node, input, message(error)).
    `input_name` may be a function of the error (when the error itself tells which input failed).
    A NodeInputError raised inside already names its input and passes through unchanged."""
    try:
        yield
    except NodeInputError:
        raise
    except catch as e:
        name = input_name(e) if callable(input_name) else input_name
        raise NodeInputError(node, name, message(e)) from e
