"""Response cache and the judging loop.

The cache is an append-only JSON Lines file (`qmr.io.JsonlAppender`: one fsync'd line per answer, a
torn last line repaired on open). A record is a judgment; its key is ``(judge, fingerprint, input_hash)``, so
an answer is reused for the same judge on the same content (whatever the case id or variant), and
editing a case's content, the template (version or text), the endpoint URL, the model or the sampling
settings asks again. Only ``cacheable`` judges (the llm ones) are cached; offline judges are re-run
(they are free and deterministic). Only valid answers are cached: a call that failed or a reply that
stayed invalid after its re-asks is asked again by the next run (and counted: see the `judge` stage's
``max_failed_share``).

`run_judges` serves cached answers without calls, sends the rest to each judge's thread pool
(``concurrency`` workers per judge, all judges in parallel), appends each answer to the cache the
moment it arrives (killing the process loses nothing answered; on Ctrl-C pending work is cancelled,
in-flight calls are waited for and saved, then the interrupt propagates), and returns the judgments in
a fixed order (case order, then judge order) whatever the completion order.

``cheap_first``: give a `VoteSpec`; offline judges run first, and a case whose offline judgments alone
are accepted by `vote_case` (rule unanimous/threshold, so at least ``min_votes`` offline judges speak and
agree) is not sent to the costly judges (llm and rollout); the calls saved are counted. ``check_sample``
such decided cases (the smallest ``sha256(seed:variant:id)``, stable when cases come and go) are sent
anyway, so what the cascade costs in accuracy is measured (``cheap_first_check`` in the stats).

Batched judges (``batched = True``: the ``rollout`` judge) get all their cases in one ``judge_many``
call after the offline judges, so a policy model generates in large batches; they are not cached
here (the generation they run is resumable).

Before the first call `run_judges` estimates the calls, tokens and dollars of what it will actually ask
(`qmr.locate.budget.estimate_run`: cached answers excluded) and logs them as one table; with a
`Budget` every call is reserved against it before it is sent, and once the budget stops (a call that
does not fit even with no other call in flight) the rest of the run is not asked (``JudgeRun.over_budget`` lists those (case, judge) pairs; what finished is cached).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmr.io import JsonlAppender
from qmr.locate.budget import Budget, estimate_run, format_estimate
from qmr.locate.cases import Case, input_hash
from qmr.locate.judges import Judge

if TYPE_CHECKING:
    from qmr.locate.vote import VoteSpec

log = logging.getLogger(__name__)


#: ``error_kind`` of a judgment the budget refused (and the marker of a call never started for it)
OVER_BUDGET = "over_budget"


def cache_key(judge: str, fingerprint: str, ihash: str) -> str:
    return json.dumps([judge, fingerprint, ihash])


def _key_of(rec: dict[str, Any]) -> str:
    return cache_key(rec["judge"], rec["cache_fingerprint"], rec["input_hash"])


class JudgmentCache:
    """Append-only judgment cache; the last record of a key wins.

    The key is (judge name, the judge's ``fingerprint``, the case's input hash). An llm judge's
    fingerprint covers everything that changes its answer: the prompt template's version *and text*,
    the endpoint URL, the model, temperature, max_tokens and reasks. Only valid answers are stored.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._appender = JsonlAppender(self.path)
        self._records: dict[str, dict[str, Any]] = {}
        stale = 0
        for rec in self._appender.existing():
            try:
                self._records[_key_of(rec)] = rec
            except (KeyError, TypeError):
                stale += 1
        if stale:
            log.warning("%s: %d record(s) from an older cache format were ignored (asked again)", self.path, stale)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, judge: Judge, case: Case) -> dict[str, Any] | None:
        rec = self._records.get(cache_key(judge.name, getattr(judge, "fingerprint", ""), input_hash(case)))
        if rec is None:
            return None
        out = {k: v for k, v in rec.items() if k != "cache_fingerprint"}
        return {**out, "id": case.id, "variant": case.variant, "sample": case.qt_sample}

    def put(self, rec: dict[str, Any], fingerprint: str = "") -> None:
        rec = {**rec, "cache_fingerprint": fingerprint}
        self._records[_key_of(rec)] = rec
        self._appender.append(rec)

    def close(self) -> None:
        self._appender.close()


@dataclass
class JudgeRun:
    """Judgments in deterministic order, and per-judge bookkeeping of this run."""

    judgments: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: `estimate_run`'s rows for the llm judges: what this run was going to ask
    estimate: dict[str, Any] = field(default_factory=dict)
    #: (case index, judge) pairs not asked because the budget stopped the run
    over_budget: list[tuple[int, str]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def calls_made(self) -> int:
        return sum(s["calls"] for s in self.stats.values())

    @property
    def calls_saved(self) -> int:
        return sum(s["calls_saved"] for s in self.stats.values())


def _new_stats() -> dict[str, Any]:
    return {
        "cases": 0,
        "cached": 0,
        "judged": 0,
        "skipped_cheap_first": 0,
        "calls": 0,
        "calls_saved": 0,
        "retries": 0,
        "failed": 0,
        "invalid": 0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost": 0.0,
        "over_budget": 0,
        "dead": False,
    }


def run_judges(
    cases: list[Case],
    judges: dict[str, Judge],
    cache_path: str | Path | None,
    *,
    cheap_first: VoteSpec | None = None,
    dead_after: int = 8,
    progress: bool = False,
    budget: Budget | None = None,
    title: str = "",
    check_sample: int = 0,
    seed: int = 0,
) -> JudgeRun:
    """Judge every case with every judge (see the module docstring).

    ``dead_after``: when a judge's first ``dead_after`` finished calls all failed to reach the endpoint
    (connection refused, timeout, auth, unknown model), its remaining cases are cancelled (``stats[name]
    ["dead"]``); the stage should then call `qmr.locate.llm.raise_if_endpoint_dead`. 0 disables this.

    ``budget``: admits each llm call (see `qmr.locate.budget`); ``title`` names the run in the
    estimate's log table.
    """
    cache = JudgmentCache(cache_path) if cache_path is not None else None
    results: dict[tuple[int, str], dict[str, Any]] = {}
    stats = {name: _new_stats() for name in judges}
    estimate: dict[str, Any] = {}
    over_budget: list[tuple[int, str]] = []
    try:
        batched = {n: j for n, j in judges.items() if getattr(j, "batched", False)}
        offline = {n: j for n, j in judges.items() if not j.cacheable and n not in batched}
        online = {n: j for n, j in judges.items() if j.cacheable and n not in batched}
        for name, judge in offline.items():
            for ci, case in enumerate(cases):
                results[(ci, name)] = judge.judge(case)
                stats[name]["cases"] += 1
                stats[name]["judged"] += 1
        costly = [*online, *batched]
        decided = set()
        if cheap_first is not None and costly:
            decided = {ci for ci, case in enumerate(cases) if _decided_offline(ci, case, offline, results, cheap_first)}
            checked = _check_sample(cases, decided, check_sample, seed)
            decided -= checked
            for name in costly:
                stats[name]["cheap_first_check"] = len(checked)
        todo: dict[str, list[int]] = {name: [] for name in online}
        batched_todo: list[int] = []
        for ci, case in enumerate(cases):
            if ci in decided:
                for name in costly:
                    stats[name]["cases"] += 1
                    stats[name]["skipped_cheap_first"] += 1
                    stats[name]["calls_saved"] += 1
                continue
            batched_todo.append(ci)
            for name, judge in online.items():
                stats[name]["cases"] += 1
                hit = cache.get(judge, case) if cache is not None else None
                if hit is not None:
                    results[(ci, name)] = hit
                    stats[name]["cached"] += 1
                    stats[name]["calls_saved"] += int(hit.get("calls") or 1)
                else:
                    todo[name].append(ci)
        if online:
            estimate = estimate_run(cases, online, todo, {n: stats[n]["cached"] for n in online})
            log.info("%s", format_estimate(estimate, budget.limit_usd if budget is not None else None, title))
        _judge_online(cases, online, todo, results, stats, cache, dead_after, progress, budget, over_budget)
        for name, judge in batched.items():
            chosen = [cases[ci] for ci in batched_todo]
            log.info("judge %s: %d case(s)", name, len(chosen))
            for ci, rec in zip(batched_todo, judge.judge_many(chosen), strict=True):
                results[(ci, name)] = rec
                s = stats[name]
                s["cases"] += 1
                s["judged"] += 1
                for key in ("rollouts", "tokens_out"):
                    s[key] = s.get(key, 0) + int(rec.get(key) or 0)
                s["seconds"] = round(s.get("seconds", 0.0) + float(rec.get("seconds") or 0.0), 4)
    finally:
        if cache is not None:
            cache.close()
    ordered = [results[(ci, name)] for ci in range(len(cases)) for name in judges if (ci, name) in results]
    for name, s in stats.items():
        log.info(
            "judge %s: %d case(s): %d cached, %d judged, %d skipped (cheap-first); %d call(s) made, %d saved",
            name, s["cases"], s["cached"], s["judged"], s["skipped_cheap_first"], s["calls"], s["calls_saved"],
        )  # fmt: skip
    return JudgeRun(ordered, stats, estimate, sorted(over_budget), budget.summary() if budget is not None else {})


def _check_sample(cases: list[Case], decided: set[int], n: int, seed: int) -> set[int]:
    """``n`` of the ``decided`` case indices, by the smallest ``sha256(seed:variant:id)``."""
    import hashlib

    if n <= 0 or not decided:
        return set()
    key = {ci: hashlib.sha256(f"{seed}:{cases[ci].variant}:{cases[ci].id}".encode()).hexdigest() for ci in decided}
    return set(sorted(decided, key=key.__getitem__)[:n])


def _decided_offline(
    ci: int,
    case: Case,
    offline: dict[str, Judge],
    results: dict[tuple[int, str], dict[str, Any]],
    spec: VoteSpec,
) -> bool:
    from qmr.locate.vote import MACHINE_ACCEPTED, vote_case

    by_judge = {name: results[(ci, name)] for name in offline if (ci, name) in results}
    label = vote_case(by_judge, spec, case_id=case.id, variant=case.variant)
    return label["rule"] in MACHINE_ACCEPTED


def _judge_online(
    cases: list[Case],
    online: dict[str, Judge],
    todo: dict[str, list[int]],
    results: dict[tuple[int, str], dict[str, Any]],
    stats: dict[str, dict[str, Any]],
    cache: JudgmentCache | None,
    dead_after: int,
    progress: bool,
    budget: Budget | None = None,
    over_budget: list[tuple[int, str]] | None = None,
) -> None:
    from qmr.locate.llm import DEAD_KINDS

    total = sum(len(v) for v in todo.values())
    if not total:
        return
    pools = {
        name: ThreadPoolExecutor(
            max_workers=max(1, online[name].concurrency), thread_name_prefix=f"judge-{name}"
        )
        for name in online
        if todo[name]
    }
    # A worker checks, before calling, whether its judge's first `dead_after` calls all failed to reach
    # the endpoint; then it skips the call (None), so a dead endpoint costs `dead_after` calls (plus at
    # most concurrency - 1 in flight) however fast the refusals arrive.
    import threading

    gate = threading.Lock()
    unreached = {name: 0 for name in online}
    reached = {name: False for name in online}

    def guarded(name: str, case: Case) -> dict[str, Any] | str | None:
        with gate:
            if dead_after and not reached[name] and unreached[name] >= dead_after:
                return None
        if budget is not None:
            if budget.stopped:
                return OVER_BUDGET
            rec = online[name].judge(case, budget=budget)
            if rec.get("error_kind") == OVER_BUDGET:
                return rec
        else:
            rec = online[name].judge(case)
        with gate:
            if rec.get("error_kind") in DEAD_KINDS:
                unreached[name] += 1
            else:
                reached[name] = True
        return rec

    futures: dict[Future, tuple[int, str]] = {}
    for name, pool in pools.items():
        for ci in todo[name]:
            futures[pool.submit(guarded, name, cases[ci])] = (ci, name)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="judge", unit="call")
    finished: dict[str, int] = {name: 0 for name in online}
    dead_streak: dict[str, bool] = {name: True for name in online}

    def record(fut: Future) -> None:
        ci, name = futures.pop(fut)
        rec = fut.result()
        if rec is None:  # skipped: the endpoint was already found dead
            return
        s = stats[name]
        if rec == OVER_BUDGET or rec.get("error_kind") == OVER_BUDGET:  # not asked (or a re-ask refused): not a result
            s["over_budget"] += 1
            if over_budget is not None:
                over_budget.append((ci, name))
            if isinstance(rec, dict):  # a first ask was made and paid before its re-ask was refused
                s["calls"] += int(rec.get("calls") or 0)
                s["tokens_in"] += int(rec.get("tokens_in") or 0)
                s["tokens_out"] += int(rec.get("tokens_out") or 0)
                s["cost"] = round(s["cost"] + float(rec.get("cost") or 0.0), 8)
            if bar is not None:
                bar.update(1)
            return
        results[(ci, name)] = rec
        s["judged"] += 1
        s["calls"] += int(rec.get("calls") or 0)
        s["retries"] += int(rec.get("retries") or 0)
        s["tokens_in"] += int(rec.get("tokens_in") or 0)
        s["tokens_out"] += int(rec.get("tokens_out") or 0)
        s["cost"] = round(s["cost"] + float(rec.get("cost") or 0.0), 8)
        if rec.get("error"):
            s["failed"] += 1
        elif not rec.get("valid"):
            s["invalid"] += 1
        if cache is not None and rec.get("valid") and not rec.get("error") and not rec.get("error_kind"):
            cache.put(rec, getattr(online[name], "fingerprint", ""))  # failures and invalid replies are asked again
        finished[name] += 1
        if rec.get("error_kind") not in DEAD_KINDS:
            dead_streak[name] = False
        if bar is not None:
            bar.update(1)

    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: futures[f]):
                record(fut)
            for name in online:
                if (
                    dead_after
                    and not stats[name]["dead"]
                    and dead_streak[name]
                    and finished[name] >= dead_after
                ):
                    stats[name]["dead"] = True
                    log.error(
                        "judge %s: the first %d calls all failed to reach the endpoint; cancelling the rest",
                        name,
                        finished[name],
                    )
                    for fut in [f for f in pending if futures[f][1] == name]:
                        if fut.cancel():
                            pending.discard(fut)
                            futures.pop(fut)
    except BaseException:
        # Ctrl-C or a judge crashing: cancel what has not started, keep what is in flight
        for fut in pending:
            fut.cancel()
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for fut in list(futures):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut)
        raise
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
