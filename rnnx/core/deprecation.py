"""Renamed names kept working for one release: the old spelling warns with a ``DeprecationWarning`` that
names the new one, and goes in rnnx 0.3. ``CHANGELOG.md`` lists each rename and why.

Private to rnnx: nothing here is public API.
"""

import warnings

REMOVED_IN = "0.3"

# Why each name changed, as its warning says it.
CARRY_RENAME = "initial_carry is also the carry argument of rnnx.unroll, Stack.apply and fit"
MESH_RENAME = (
    "mesh= meant a mesh with a 'seq' axis in rnnx.unroll and one with a 'data' axis in fit; each now names its axis"
)


def warn_renamed(old: str, new: str, why: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now ``new``; ``stacklevel`` 3 points at the caller of the function that warns."""
    message = f"{old} is deprecated and will be removed in rnnx {REMOVED_IN}: use {new} ({why})"
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed_argument(owner: str, old: str, old_value, new: str, new_value, why: str):
    """The value of keyword argument ``new`` of ``owner``, or of its deprecated alias ``old`` (None: not
    given), with a warning pointing at ``owner``'s caller; both given is a TypeError."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{owner} received both {new}= and its deprecated alias {old}=; pass {new}= only")
    warn_renamed(f"{owner}({old}=)", f"{new}=", why, stacklevel=4)
    return old_value


__all__ = ["CARRY_RENAME", "MESH_RENAME", "REMOVED_IN", "renamed_argument", "warn_renamed"]
