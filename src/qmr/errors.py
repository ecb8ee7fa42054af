"""The one user-error type.

Every problem a user can fix (bad params, a malformed data file, a missing upstream output, an
endpoint that cannot start) derives from :class:`UserError`. The CLI turns it into one line on
stderr and exit code 2, for every command, without a traceback; anything else is a bug and keeps
its traceback (exit 1).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the key or file, the value and what is allowed."""


def choose(option: str, name: str, allowed):
    """``allowed[name]`` for a command-line option; a ``UserError`` listing the allowed names otherwise.
    Looks the one name up (``.get``), so a stage that validates its ``--variant`` does not thereby
    depend on the whole list of variants."""
    value = allowed.get(name)
    if value is None:
        raise UserError(f"--{option}: got {name!r}; allowed: {', '.join(sorted(allowed))}")
    return value
