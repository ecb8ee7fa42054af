"""Registries at the extension points: one table per point, name -> ``"module:attribute"``.

Each extension point keeps its table beside the code that uses it (judge kinds in `locate/judges.py`,
quantization methods in `quant/spec.py`, restore objectives in `restore/train.py`, recovery subsets in
`restore/silver.py`, benchmark formats in `benchmarks.py`, generation backends in `generation/`). The
attribute is imported only when a name is used, so a table costs nothing to load and an optional
extra is needed only by the entry that uses it. Params validation and ``qmr params show`` take the
allowed names from the table (`Registry.literal`); an unknown name is a `UserError` that lists them and
suggests the nearest ("did you mean ...").

Adding, say, a judge kind is one module plus one table entry::

    JUDGE_KINDS = Registry("judge.judges.<name>.kind", {..., "mykind": "qmr.locate.mykind:MyJudge"})

An entry may carry **traits**: small facts about it that callers need without importing it (a judge
kind's ``sees``: which errors it can see, read by the vote). ``traits={"mykind": {"sees": "step"}}``;
`Registry.trait` returns one (a default for names without it).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from qmr.errors import UserError, did_you_mean


class Registry(Mapping[str, str]):
    """An ordered table ``name -> "module:attribute"`` for the params key ``key``."""

    def __init__(self, key: str, entries: dict[str, str], traits: dict[str, dict[str, Any]] | None = None):
        for name, target in entries.items():
            if target.count(":") != 1:
                raise ValueError(f"registry {key}: {name} -> {target!r}; allowed: 'module:attribute'")
        stray = sorted(set(traits or {}) - set(entries))
        if stray:
            raise ValueError(f"registry {key}: traits for {', '.join(stray)}; allowed: names of the table")
        self.key = key
        self._entries = dict(entries)
        self._traits = {name: dict(t) for name, t in (traits or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def trait(self, name: str, trait: str, default: Any = None) -> Any:
        """The entry's ``trait`` (e.g. a judge kind's ``sees``), ``default`` when it has none or is unknown."""
        return self._traits.get(name, {}).get(trait, default)

    def literal(self) -> Any:
        """``Literal[<names>]``: the params field type, so validation lists exactly this table."""
        return Literal[self.names()]  # type: ignore[valid-type]

    def check(self, name: object, key: str | None = None) -> str:
        """``name`` when registered; otherwise a `UserError` naming the key, the value and the choices."""
        if isinstance(name, str) and name in self._entries:
            return name
        raise UserError(
            f"{key or self.key}: got {name!r}; allowed: {', '.join(self._entries)}{did_you_mean(name, self.names())}"
        )

    def load(self, name: object, key: str | None = None) -> Any:
        """The registered attribute for ``name``, imported now."""
        module, attribute = self._entries[self.check(name, key)].split(":")
        return getattr(importlib.import_module(module), attribute)
