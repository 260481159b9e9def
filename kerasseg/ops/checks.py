"""Argument checks, written once for the whole package.

Each check raises an error that names the argument, says what is accepted and shows what was
given, optionally after a `context` prefix (the function or layer being called):

    check_int(3, "num_classes", minimum=1)            # -> 3
    check_int(0, "num_classes", minimum=1)            # ValueError: `num_classes` must be an
                                                      #   integer >= 1; got 0.
    check_number(0.5, "mask_threshold", 0, 1, context="detections_from_outputs")

Booleans are refused wherever a number is expected (`True` is an `int` in Python).
"""

import difflib
import math
import numbers

import numpy as np
from keras import ops

__all__ = [
    "check_int",
    "check_ints",
    "check_keys",
    "check_number",
    "check_positive_int",
    "check_probability",
    "check_rate",
    "did_you_mean",
    "is_int",
    "is_number",
    "to_numpy",
]


def is_int(value):
    """True for Python and NumPy integers, False for booleans."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """True for Python and NumPy real numbers, False for booleans."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _prefix(context):
    return f"{context}: " if context else ""


def _bounds(kind, minimum, maximum, odd=False):
    """The accepted values in words: "an integer >= 1", "a number in [0, 1]", ..."""
    article = "an odd integer" if odd else kind
    if minimum is not None and maximum is not None:
        return f"{article} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"{article} >= {minimum}"
    if maximum is not None:
        return f"{article} <= {maximum}"
    return article


def check_int(
    value,
    name,
    minimum=None,
    maximum=None,
    *,
    odd=False,
    allow_none=False,
    context="",
    type_error=False,
):
    """Check that `value` is an integer within bounds; returns it as a Python int.

    Args:
        value: the value given.
        name: the argument's name, for the message.
        minimum: the smallest accepted value, or None.
        maximum: the largest accepted value, or None.
        odd: accept odd integers only.
        allow_none: accept None (and return it).
        context: a prefix for the message (the function or layer that checks).
        type_error: raise a TypeError (not a ValueError) when `value` is not an integer.

    Returns:
        `int(value)`, or None when allowed and given.

    Raises:
        ValueError: `value` is not an integer (TypeError with `type_error`) or out of bounds.
    """
    if value is None and allow_none:
        return None
    rule = _bounds("an integer", minimum, maximum, odd)
    if allow_none:
        rule += " or None"
    message = f"{_prefix(context)}`{name}` must be {rule}; got {value!r}."
    if not is_int(value):
        raise (TypeError if type_error else ValueError)(message)
    too_small = minimum is not None and value < minimum
    too_large = maximum is not None and value > maximum
    if too_small or too_large or (odd and value % 2 == 0):
        raise ValueError(message)
    return int(value)


def check_number(
    value,
    name,
    minimum=None,
    maximum=None,
    *,
    positive=False,
    allow_none=False,
    context="",
):
    """Check that `value` is a finite real number within bounds; returns it as a float.

    As `check_int` (the same arguments but `odd` and `type_error`, bounds inclusive), for
    real numbers; with `positive`, only values > 0 are accepted. Non-finite values (NaN,
    infinity) are refused with a ValueError.
    """
    if value is None and allow_none:
        return None
    rule = "a finite number > 0" if positive else _bounds("a number", minimum, maximum)
    if rule == "a number":
        rule = "a finite number"
    if allow_none:
        rule += " or None"
    message = f"{_prefix(context)}`{name}` must be {rule}; got {value!r}."
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(message)
    too_small = (minimum is not None and value < minimum) or (positive and value <= 0)
    if too_small or (maximum is not None and value > maximum):
        raise ValueError(message)
    return float(value)


def check_probability(value, name, context=""):
    """Check that `value` is a number in [0, 1]; returns it as a float."""
    return check_number(value, name, 0, 1, context=context)


def check_rate(value, name):
    """Check that `value` is a number in [0, 1) (a dropout rate); returns it as a float."""
    if not is_number(value) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1); got {value!r}.")
    return float(value)


def check_ints(value, count, name, accepted):
    """Check that `value` is a tuple or list of `count` integers >= 1.

    Args:
        value: the value given.
        count: how many integers.
        name: the argument's name, for the message.
        accepted: what is accepted, in words, for the message.

    Returns:
        The integers as a tuple.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, tuple | list) and len(value) == count:
        if all(is_int(item) and item >= 1 for item in value):
            return tuple(int(item) for item in value)
    raise ValueError(f"`{name}` must be {accepted}; got {value!r}.")


def check_keys(value, what, keys, described, context=""):
    """Check that `value` is a dict that holds every key of `keys`; returns it.

    Args:
        value: the value given.
        what: the value in words, for the messages: "`outputs`", "the targets of image 3".
        keys: the keys it must hold.
        described: what such a dict holds, for the messages: "detections: 'boxes' (n, 4),
            'scores' (n,) ...".
        context: a prefix for the messages (the function that checks).

    Raises:
        TypeError: `value` is not a dict.
        KeyError: `value` lacks keys of `keys`.
    """
    if not isinstance(value, dict):
        raise TypeError(
            f"{_prefix(context)}{what} must be a dict of {described}; got {type(value).__name__}."
        )
    missing = [key for key in keys if key not in value]
    if missing:
        raise KeyError(
            f"{_prefix(context)}{what} lacks {missing} (a dict of {described}); got keys "
            f"{sorted(value)}."
        )
    return value


def did_you_mean(name, names, *, count=3, cutoff=0.4):
    """The hint of an "unknown name" message: the entries of `names` closest to `name`.

    Args:
        name: the unknown name given.
        names: the accepted names.
        count: how many close names to list at most.
        cutoff: how close a name must be, in [0, 1] (`difflib.get_close_matches`).

    Returns:
        " Did you mean 'unet', 'unetplusplus'?" (with the leading space, to follow the
        message's first sentence), or "" when no name is close.
    """
    close = difflib.get_close_matches(str(name), list(names), n=count, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def to_numpy(value, name, context=""):
    """A NumPy array from an array, a tensor of any Keras backend, or nested lists.

    Raises:
        TypeError: `value` is None, a string, bytes or a dict.
    """
    if value is None or isinstance(value, str | bytes | dict):
        raise TypeError(
            f"{_prefix(context)}`{name}` must be an array or tensor; got {type(value).__name__}."
        )
    try:
        return np.asarray(ops.convert_to_numpy(value))
    except Exception:
        return np.asarray(value)


def check_positive_int(value, name, *, context="", type_error=False):
    """Check that `value` is an integer >= 1; returns it as a Python int.

    Same as ``check_int(value, name, minimum=1)`` with the wording "must be a positive
    integer", which several published messages use.

    Raises:
        ValueError: `value` is not an integer (TypeError with `type_error`) or is < 1.
    """
    message = f"{_prefix(context)}`{name}` must be a positive integer; got {value!r}."
    if not is_int(value):
        raise (TypeError if type_error else ValueError)(message)
    if value < 1:
        raise ValueError(message)
    return int(value)
