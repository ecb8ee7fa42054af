"""The one user-error type.

Every problem a user can fix (bad params, a malformed data file, a missing upstream output, an
endpoint that cannot start) derives from :class:`UserError`. The CLI turns it into one line on
stderr and exit code 2, for every command, without a traceback; anything else is a bug and keeps
its traceback (exit 1).
"""

from __future__ import annotations


def did_you_mean(value: object, allowed: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` when ``value`` is a string close to one of ``allowed``, else ``""``."""
    import difflib

    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    if not close:
        close = [a for a in allowed if a.lower() == value.lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


class UserError(Exception):
    """A problem the user can fix; the message names the key or file, the value and what is allowed."""


def choose(option: str, name: str, allowed):
    """``allowed[name]`` for a command-line option; a ``UserError`` listing the allowed names otherwise.
    Looks the one name up (``.get``), so a stage that validates its ``--variant`` does not thereby
    depend on the whole list of variants."""
    value = allowed.get(name)
    if value is None:
        choices = sorted(allowed)
        raise UserError(f"--{option}: got {name!r}; allowed: {', '.join(choices)}{did_you_mean(name, choices)}")
    return value
