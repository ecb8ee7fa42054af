"""Typed, validated configuration: dataclasses in, a list of every problem out.

Each concept keeps a config dataclass beside its code (``QuantSpec`` beside the recipes, ``JudgeSpec``
beside the judges …); ``qmr.params`` composes them into the whole ``params.yaml`` schema. ``from_dict``
walks a plain dict against a dataclass type and collects *every* problem — unknown key, wrong type,
value outside a ``Literal`` — as a ``Problem`` naming the dotted key, the value and what is allowed,
instead of stopping at the first. Domain rules that span fields go in a ``check(self, key)`` method
returning more problems. Field docstrings live in ``metadata={"help": ...}`` and feed ``qmr params``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from qmr.errors import UserError, did_you_mean

# Whether validation also requires every local file or directory named by the params to exist. On for
# `qmr params check` and every stage; off while composing a preset (`qmr params preset`), which must work
# on a machine that has not fetched anything yet.
CHECK_PATHS: contextvars.ContextVar[bool] = contextvars.ContextVar("qmr_check_paths", default=True)


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.key}: got {self.value!r}; allowed: {self.allowed}"


class ConfigError(UserError, ValueError):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[Problem], source: str = "params.yaml"):
        self.problems = problems
        self.source = source
        lines = [f"{source}: {len(problems)} problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1


def field(default: Any = dataclasses.MISSING, *, help: str = "", default_factory: Any = dataclasses.MISSING,
          ge: float | None = None, le: float | None = None):  # fmt: skip
    """``dataclasses.field`` with a help string (shown by ``qmr params``) and an optional numeric range
    ``ge <= value <= le`` that validation enforces (a value outside is one problem naming the key)."""
    kw: dict[str, Any] = {"metadata": {"help": help, "ge": ge, "le": le}}
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    elif default is not dataclasses.MISSING:
        kw["default"] = default
    return dataclasses.field(**kw)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        _, inner = get_args(tp) or (str, Any)
        return f"a mapping of name -> {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str, problems: list[Problem]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        problems.append(Problem(key, value, _type_name(tp) + did_you_mean(value, [str(a) for a in get_args(tp)])))
        return None
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[Problem] = []
            out = _convert(arg, value, key, trial)
            if not trial:
                return out
        problems.append(Problem(key, value, _type_name(tp)))
        return None
    if origin in (list, tuple):
        if not isinstance(value, list):
            problems.append(Problem(key, value, _type_name(tp)))
            return None
        (inner, *_) = get_args(tp) or (Any,)
        return [_convert(inner, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(Problem(key, value, _type_name(tp)))
            return None
        _, inner = get_args(tp) or (str, Any)
        if dataclasses.is_dataclass(inner):
            for k, v in value.items():
                if v is None:  # `rtn-w2g128: null` must not become a default spec (a GPTQ W4 variant)
                    problems.append(Problem(f"{key}.{k}", None, _type_name(inner)))
            value = {k: v for k, v in value.items() if v is not None}
        return {str(k): _convert(inner, v, f"{key}.{k}", problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key, problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    problems.append(Problem(key, value, _type_name(tp)))
    return None


def from_dict(cls: type, data: Any, key: str = "", problems: list[Problem] | None = None):
    """Build ``cls`` from ``data``; append problems to ``problems`` (raise if it is None and any)."""
    raise_at_end = problems is None
    problems = [] if problems is None else problems
    if data is None and key:  # `restore: null` must not silently become the code's defaults
        problems.append(Problem(key, None, _type_name(cls) + " (null is not a mapping: delete the key for the defaults)"))
        if raise_at_end:
            raise ConfigError(problems)
        return None
    if data is None:
        data = {}
    prefix = f"{key}." if key else ""
    if not isinstance(data, dict):
        problems.append(Problem(key or "<root>", data, _type_name(cls)))
        if raise_at_end:
            raise ConfigError(problems)
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            problems.append(Problem(f"{prefix}{k}", data[k], "a known key: " + ", ".join(sorted(fields))))
    kwargs: dict[str, Any] = {}
    broken: set[str] = set()
    for name, f in fields.items():
        if name in data:
            before = len(problems)
            value = _convert(hints[name], data[name], f"{prefix}{name}", problems)
            if len(problems) == before:
                _check_range(f, value, f"{prefix}{name}", problems)
            if len(problems) > before and not _is_container(value):
                broken.add(name)
            else:  # containers keep their valid parts; their problems are already recorded
                kwargs[name] = _drop_none(value)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(Problem(f"{prefix}{name}", "<missing>", f"required: {_type_name(hints[name])}"))
            broken.add(name)
    obj = None
    try:
        # Broken fields fall back to their defaults so cross-field checks still see an object.
        obj = cls(**kwargs)
    except TypeError:
        obj = None  # a required field is broken: skip cross-field checks for this object
    if obj is not None and hasattr(obj, "check"):
        try:
            problems.extend(obj.check(key))
        except (AttributeError, TypeError, KeyError):
            if not broken:
                raise
    if raise_at_end and problems:
        raise ConfigError(problems)
    return obj


def _check_range(f: dataclasses.Field, value: Any, key: str, problems: list[Problem]) -> None:
    ge, le = f.metadata.get("ge"), f.metadata.get("le")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (ge is None and le is None):
        return
    if (ge is not None and value < ge) or (le is not None and value > le) or value != value:
        lo = "" if ge is None else f">= {ge:g}" if isinstance(ge, float) else f">= {ge}"
        hi = "" if le is None else f"<= {le:g}" if isinstance(le, float) else f"<= {le}"
        problems.append(Problem(key, value, "a number " + " and ".join(x for x in (lo, hi) if x)))


def _is_container(value: Any) -> bool:
    return value is not None and (dataclasses.is_dataclass(value) or isinstance(value, (dict, list)))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) rows for documentation and ``qmr params show``: every key,
    including the fields of each per-item section (a ``dict[str, <dataclass>]`` such as ``models``
    gives a row for the section and rows ``models.<name>.<field>`` for the item's fields)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        help_ = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            rows.append((key, "a section", "", help_))
            rows.extend(describe(tp, key + "."))
            continue
        item = get_args(tp)[1] if get_origin(tp) is dict and get_args(tp) else None
        if item is not None and dataclasses.is_dataclass(item):
            placeholder = "<slug>" if f.name == "variants" else "<name>"
            rows.append((key, f"a mapping of name -> {item.__name__} (fields: {key}.{placeholder}.*)", _show_default(f), help_))
            rows.extend(describe(item, f"{key}.{placeholder}."))
            continue
        ge, le = f.metadata.get("ge"), f.metadata.get("le")
        bounds = " and ".join(f"{op} {b:g}" if isinstance(b, float) else f"{op} {b}" for op, b in ((">=", ge), ("<=", le)) if b is not None)
        rows.append((key, _type_name(tp) + (f", {bounds}" if bounds else ""), _show_default(f), help_))
    return rows


def _show_default(f: dataclasses.Field) -> str:
    """A field's default as YAML would spell it ('' when it has none)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


# --------------------------------------------------------------------------------------------------
# which keys a stage reads (QMR_PARAMS_TRACE; tests/test_pipeline.py compares them with dvc.yaml)


def traced(obj: Any, key: str = "", seen: set[str] | None = None) -> tuple[Any, set[str]]:
    """A copy of the config tree ``obj`` that records in ``seen`` the dotted key of every value read:
    a scalar field (``generate.batch_size``), a list or a mapping's key set when iterated or measured
    (``generate.benchmarks``, ``quantize.variants``); a method of a config object reads through the
    same hooks. Subclasses keep ``isinstance`` and ``dataclasses``
    working; reading through ``dataclasses.asdict`` records every field."""
    seen = set() if seen is None else seen
    return _trace(obj, key, seen), seen


_TRACED_TYPES: dict[type, type] = {}


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _trace(value: Any, key: str, seen: set[str]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        sub = _TRACED_TYPES.get(cls)
        if sub is None:
            names = {f.name for f in dataclasses.fields(cls)}

            def __getattribute__(self, name, _names=names):
                value = object.__getattribute__(self, name)
                state = object.__getattribute__(self, "__dict__")
                seen, key = state.get("_qmr_seen"), state.get("_qmr_key", "")
                if seen is None:  # a copy made by dataclasses.replace: no longer traced
                    return value
                if name in _names and not (isinstance(value, (_TracedDict, _TracedList)) or dataclasses.is_dataclass(value)):
                    seen.add(_join(key, name))
                return value

            sub = _TRACED_TYPES[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__})
        new = object.__new__(sub)
        for f in dataclasses.fields(value):
            object.__setattr__(new, f.name, _trace(getattr(value, f.name), _join(key, f.name), seen))
        object.__setattr__(new, "_qmr_key", key)
        object.__setattr__(new, "_qmr_seen", seen)
        return new
    if isinstance(value, dict):
        return _TracedDict({k: _trace(v, _join(key, k), seen) for k, v in value.items()}, key, seen)
    if isinstance(value, list):
        return _TracedList(value, key, seen)
    return value


class _TracedDict(dict):
    def __init__(self, data=(), key: str = "", seen: set[str] | None = None):
        super().__init__(data)
        self._key, self._seen = key, (set() if seen is None else seen)

    def _whole(self) -> None:
        self._seen.add(self._key)

    def __getitem__(self, k):
        value = super().__getitem__(k)
        if not (isinstance(value, (_TracedDict, _TracedList)) or dataclasses.is_dataclass(value)):
            self._seen.add(_join(self._key, k))
        return value

    def get(self, k, default=None):  # one key, not the key set: `params.models.get(name)` validates a name
        return self[k] if super().__contains__(k) else default

    def __contains__(self, k):
        self._whole()
        return super().__contains__(k)

    def __iter__(self):
        self._whole()
        return super().__iter__()

    def __len__(self):
        self._whole()
        return super().__len__()

    def keys(self):
        self._whole()
        return super().keys()

    def values(self):
        self._whole()
        return super().values()

    def items(self):
        self._whole()
        return super().items()


class _TracedList(list):
    def __init__(self, data=(), key: str = "", seen: set[str] | None = None):
        super().__init__(data)
        self._key, self._seen = key, (set() if seen is None else seen)

    def __iter__(self):
        self._seen.add(self._key)
        return super().__iter__()

    def __getitem__(self, i):
        self._seen.add(self._key)
        return super().__getitem__(i)

    def __len__(self):
        self._seen.add(self._key)
        return super().__len__()

    def __contains__(self, x):
        self._seen.add(self._key)
        return super().__contains__(x)


# --------------------------------------------------------------------------------------------------
# reading YAML config files safely

MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 100


def load_yaml(text: str, source: str) -> Any:
    """Parse a YAML config file, refusing what would silently mislead or exhaust the machine:
    duplicate keys (YAML keeps the last one), more than ``MAX_YAML_ALIASES`` aliases (an alias bomb),
    nesting deeper than ``MAX_YAML_DEPTH``, files over ``MAX_YAML_BYTES``. Raises ``ConfigError``."""
    import yaml

    def bad(what: str) -> ConfigError:
        return ConfigError([Problem("<file>", source, what)], source=source)

    if len(text) > MAX_YAML_BYTES:
        raise bad(f"a YAML file under {MAX_YAML_BYTES // 1_000_000} MB (got {len(text):,} characters)")
    depth = aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise bad(f"YAML nested at most {MAX_YAML_DEPTH} levels deep (line {event.start_mark.line + 1})")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise bad(f"at most {MAX_YAML_ALIASES} YAML aliases (*name); this file has more (an alias bomb?)")
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise bad(f"valid YAML ({' '.join(str(exc).split())})") from None


# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot (`5e-05`, which
# is how `dvc exp run -S restore.learning_rate=5e-5` writes it) or without a sign (`3.0e5`). DVC reads
# them as numbers, so qmr must too.
EXPONENT_FLOAT = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"


def yaml_loader():
    """The SafeLoader every qmr YAML read goes through: YAML 1.2 exponent floats are numbers."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(EXPONENT_FLOAT), list("-+0123456789."))
    return Loader


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml_loader()):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: let the base class report it
                    continue
                if first != line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (lines {first} and {line}): YAML would keep only the last", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader

