"""What paid judging will cost, before it starts, and a cap that stops it before it overspends.

**Estimate.** For every (case, llm judge) the run will actually ask (cached answers and cases decided
by cheap-first excluded), one call: prompt tokens estimated from the rendered prompt as
``ceil(characters / 4)`` (no tokenizer: judges sit behind different providers' tokenizers, and this
needs no download), completion tokens at the judge's ``max_tokens`` (a ceiling: replies are usually
shorter), dollars from the endpoint's ``price_in_per_mtok``/``price_out_per_mtok``. Re-asks after an
invalid reply are not in the estimate (they are admitted against the budget like any call).

**Budget** (``judge.budget_usd``): every call — first asks and re-asks — is admitted only when the
dollars already spent (actual usage of finished calls), plus the reservations of calls in flight, plus
this call's reservation stay within the cap; the reservation is taken *before* sending, so several
workers in flight can never together overshoot it. A call that does not fit while others are in flight
waits for them to finish (their actual cost is usually below their reservation); one that does not fit
with nothing in flight stops the budget. A reservation is the call's estimate with the
prompt part scaled by the judge's observed ratio of actual to estimated prompt tokens (never below 1),
so a provider whose tokenizer counts more tokens than characters / 4 is reserved for accordingly after
its first answers. Once stopped, no further call is admitted; calls in flight
finish (and are cached). A finished call is charged its reported usage; a reply without usage
is charged its reservation; a call that failed in transport is charged nothing.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` estimated as ``ceil(len / 4)`` (at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def usd(spec: Any, tokens_in: float, tokens_out: float) -> float:
    """Dollars for this usage at ``spec``'s prices (per million tokens)."""
    return tokens_in * spec.price_in_per_mtok / 1e6 + tokens_out * spec.price_out_per_mtok / 1e6


def money(x: float) -> str:
    """``$1,234.56`` from a dollar up, ``$0.0040`` below."""
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


def _messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m.get("content") or "") for m in messages)


def new_row() -> dict[str, Any]:
    return {"model": "", "calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0}


def estimate_run(cases: list, judges: dict[str, Any], todo: dict[str, list[int]], cached: dict[str, int]) -> dict[str, Any]:
    """``{"judges": {name: row}, "total": row}``: per judge, the calls this run will make (one per case
    in ``todo[name]``), their estimated prompt and completion tokens and dollars, and how many answers
    come from the cache instead. A judge without ``prompt``/``spec`` (not an llm judge) counts calls only."""
    out: dict[str, dict[str, Any]] = {}
    total = new_row()
    for name, judge in judges.items():
        row = new_row()
        spec = getattr(judge, "spec", None)
        row["model"] = getattr(judge, "model", "")
        row["cached"] = cached.get(name, 0)
        for ci in todo.get(name, []):
            row["calls"] += 1
            if spec is not None and hasattr(judge, "prompt"):
                row["prompt_tokens"] += estimate_tokens(judge.prompt(cases[ci]))
                row["completion_tokens"] += spec.max_tokens
        if spec is not None:
            row["usd"] = round(usd(spec, row["prompt_tokens"], row["completion_tokens"]), 6)
        out[name] = row
        for k in ("calls", "cached", "prompt_tokens", "completion_tokens"):
            total[k] += row[k]
        total["usd"] = round(total["usd"] + row["usd"], 6)
    return {"judges": out, "total": total}


def format_estimate(estimate: dict[str, Any], limit_usd: float | None, title: str = "") -> str:
    """One readable table of `estimate_run`'s rows, and the budget line."""
    head = ("judge", "model", "calls", "cached", "prompt tok", "completion tok", "est. USD")
    rows = [head]
    for name, r in [*estimate["judges"].items(), ("total", estimate["total"])]:
        rows.append((name, r["model"], f"{r['calls']:,}", f"{r['cached']:,}", f"{r['prompt_tokens']:,}",
                     f"{r['completion_tokens']:,}", money(r["usd"])))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"estimated cost of {title or 'this run'} (tokens ~ characters/4; completions at max_tokens, "
             "a ceiling; cached answers are free):"]  # fmt: skip
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("  " + "  ".join("-" * w for w in widths))
        lines.append("  " + "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
    if limit_usd is None:
        lines.append("  budget: none (judge.budget_usd: null)")
    else:
        total = estimate["total"]["usd"]
        verdict = "within it" if total <= limit_usd else "the run will stop before exceeding it"
        lines.append(f"  budget: judge.budget_usd {money(limit_usd)}, estimate {money(total)}: {verdict}")
    return "\n".join(lines)


@dataclass
class Ticket:
    """A reservation for one call."""

    judge: str
    usd: float
    prompt_tokens_est: int


class Budget:
    """A thread-safe dollar cap over the calls of one run (``limit_usd`` None: no cap, spend tracked)."""

    def __init__(self, limit_usd: float | None):
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.calls = 0
        self.stopped = False
        self._lock = threading.Condition()
        self._prompt_est: dict[str, int] = {}
        self._prompt_actual: dict[str, int] = {}
        self._in_flight = 0

    def _ratio(self, judge: str) -> float:
        est = self._prompt_est.get(judge, 0)
        return max(1.0, self._prompt_actual.get(judge, 0) / est) if est else 1.0

    def reserve(self, judge: Any, messages: list[dict[str, str]]) -> Ticket | None:
        """Reserve the cost of sending ``messages`` to ``judge``. When it does not fit beside the calls in
        flight, wait for them; None (and the budget stops) when it does not fit with none in flight, or
        when the budget has already stopped."""
        prompt = _messages_tokens(messages)
        with self._lock:
            while True:
                if self.stopped:
                    return None
                cost = usd(judge.spec, prompt * self._ratio(judge.name), judge.spec.max_tokens)
                if self.limit_usd is None or self.spent_usd + self.reserved_usd + cost <= self.limit_usd:
                    self.reserved_usd += cost
                    self._in_flight += 1
                    return Ticket(judge.name, cost, prompt)
                if not self._in_flight:
                    self.stopped = True
                    self._lock.notify_all()
                    return None
                self._lock.wait(1.0)

    def settle(self, ticket: Ticket | None, judge: Any, tokens_in: int | None, tokens_out: int | None) -> None:
        """Release ``ticket`` and charge the call's actual usage (None: the call failed in transport,
        charged nothing; 0 and 0: no usage reported, charged the reservation)."""
        if ticket is None:
            return
        with self._lock:
            self._in_flight -= 1
            self.reserved_usd = max(0.0, self.reserved_usd - ticket.usd) if self._in_flight else 0.0
            self._lock.notify_all()
            if tokens_in is None or tokens_out is None:
                return
            self.calls += 1
            if tokens_in == 0 and tokens_out == 0:
                self.spent_usd += ticket.usd
                return
            self.spent_usd += usd(judge.spec, tokens_in, tokens_out)
            self._prompt_est[ticket.judge] = self._prompt_est.get(ticket.judge, 0) + ticket.prompt_tokens_est
            self._prompt_actual[ticket.judge] = self._prompt_actual.get(ticket.judge, 0) + tokens_in

    def summary(self) -> dict[str, Any]:
        return {"limit_usd": self.limit_usd, "spent_usd": round(self.spent_usd, 6), "calls": self.calls, "stopped": self.stopped}
