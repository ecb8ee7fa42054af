"""The ``rollout`` judge: Monte-Carlo rollouts from prefixes of the quantized trace.

This is how Math-Shepherd and OmegaPRM label process-reward data, made a judge. For a failure case
with steps ``s_1..s_n``, prefix ``k`` is the model's prompt followed by ``s_1..s_k``. A *policy* (by
default the pipeline's reference variant, i.e. the full-precision model, through the generation
backend) samples ``samples`` continuations of each prefix; the project's grader says which reach the
gold answer; ``p_k = successes / samples`` estimates the prefix's *potential*.

``p_0`` (no step kept) is the policy's own chance on the problem. ``p_n`` needs no rollout: the full
trace is graded (a pipeline failure case is wrong: 0; a judge-bench item is graded against its gold
answer). Step ``k`` is **collapsed** when ``p_k`` is significantly lower than ``p_0`` — a one-sided
two-proportion z-test at ``alpha`` (the test used for "cliff tokens") — and at least ``min_drop`` below
it. The first faulty step is the smallest ``k`` from which every prefix rolled out is collapsed (a dip
that recovers at a later prefix is sampling noise: a wrong value propagates). Nothing collapsed and the trace is right:
``no_error``. Nothing collapsed and the trace is wrong (the policy rarely solves the problem itself,
so even a drop to 0 is not significant) or no gold answer to grade against: the judge abstains and
says why.

``search``: ``linear`` rolls out every prefix ``0..n-1`` (one batch for all cases; the whole potential
curve is kept for plots); ``binary`` assumes that a collapse persists (a wrong value propagates) and
bisects for the first collapsed step as OmegaPRM does — ``1 + ceil(log2 n)`` prefixes instead of ``n``,
in lockstep rounds so every round is one batch.

The judge is step-only (its kind ``sees: step``): it says where, never what. The vote takes the type
of its step from the typed judges that found an error there (`qmr.locate.vote`). Its judgments carry
``potential`` (``[[k, successes, samples], ...]``), ``rollouts`` (continuations sampled) and
``tokens_out``/``seconds`` (generated tokens and generation time attributed to the case).

A policy is any ``(prompts, n) -> n completions per prompt`` returning `qmr.generation.Completion`
objects (`policy_from_backend` for a local model; `policy_from_teacher` for an OpenAI-compatible
endpoint, ``policy: <endpoint name>``, which gets the plain problem prompt and the kept steps); the
stage binds it with `RolloutJudge.bind`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from qmr.locate.cases import Case
from qmr.locate.judges import make_judgment

log = logging.getLogger(__name__)

Policy = Callable[[list[str], int], list[list[Any]]]
"""``policy(prompts, n)`` -> for each prompt, ``n`` sampled `Completion` s (``text``, ``tokens``, ``seconds``)."""

SEARCHES = ("linear", "binary")


def z_less(k_hi: int, n_hi: int, k_lo: int, n_lo: int) -> float:
    """One-sided p-value of the two-proportion z-test of H1: p_lo < p_hi (pooled variance).

    1.0 when the pooled proportion is 0 or 1 (no evidence of a difference)."""
    if n_hi <= 0 or n_lo <= 0:
        return 1.0
    p_hi, p_lo = k_hi / n_hi, k_lo / n_lo
    pooled = (k_hi + k_lo) / (n_hi + n_lo)
    var = pooled * (1 - pooled) * (1 / n_hi + 1 / n_lo)
    if var <= 0:
        return 1.0
    z = (p_hi - p_lo) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def collapsed(root: tuple[int, int], point: tuple[int, int], alpha: float, min_drop: float) -> bool:
    """Has the potential at ``point`` (successes, samples) collapsed relative to ``root``'s?"""
    (k0, n0), (k, n) = root, point
    if n0 == 0 or n == 0:
        return False
    return k0 / n0 - k / n >= min_drop and z_less(k0, n0, k, n) < alpha


class RolloutJudge:
    """Step-only judge from Monte-Carlo rollouts (module docstring). Not thread-based: `judge_many`
    runs all cases in a few large batches; `judge` is one case through the same path."""

    cacheable = False
    batched = True
    concurrency = 1

    def __init__(self, name: str = "rollout", *, samples: int = 8, alpha: float = 0.05, min_drop: float = 0.5,
                 search: str = "linear", policy_name: str = ""):  # fmt: skip
        if search not in SEARCHES:
            raise ValueError(f"search: got {search!r}; allowed: {', '.join(SEARCHES)}")
        self.name = name
        self.kind = "rollout"
        self.samples = samples
        self.alpha = alpha
        self.min_drop = min_drop
        self.search = search
        self.model = policy_name
        self.prompt_version = f"rollout-{search}-n{samples}"
        self.policy: Policy | None = None
        self.prompt_of: Callable[[Case], str] | None = None
        self.grade: Callable[[str, Case], bool] | None = None

    def bind(self, policy: Policy, *, prompt_of: Callable[[Case], str] | None = None,
             grade: Callable[[str, Case], bool] | None = None, policy_name: str = "") -> RolloutJudge:  # fmt: skip
        """Give the judge its policy, the prompt the policy sees for a case (default: the plain
        ``Question: …`` prompt) and a grader of one continuation (default: `qmr.grading.grade` with
        kind ``math``)."""
        self.policy = policy
        self.prompt_of = prompt_of
        self.grade = grade
        if policy_name:
            self.model = policy_name
        return self

    # ---------------------------------------------------------------------------------------------

    def _prompt(self, case: Case, k: int) -> str:
        from qmr.prompts import build_prompt, resume_prompt

        base = self.prompt_of(case) if self.prompt_of is not None else build_prompt(case.question)
        return resume_prompt(base, case.qt_steps[:k])

    def _correct(self, text: str, case: Case) -> bool:
        if self.grade is not None:
            return self.grade(text, case)
        from qmr.grading import grade

        return grade(text, case.gold_answer, "math")[1]

    def _roll(self, requests: list[tuple[int, int]], cases: list[Case], acc: list[dict[str, Any]]) -> None:
        """Roll out prefix k of case ci for every (ci, k) in ``requests`` (one batch); record
        successes, tokens and seconds into ``acc[ci]``."""
        if not requests:
            return
        if self.policy is None:
            raise RuntimeError(f"judge {self.name!r}: no policy bound (the judge stage or judge-bench binds one)")
        prompts = [self._prompt(cases[ci], k) for ci, k in requests]
        start = time.perf_counter()
        outs = self.policy(prompts, self.samples)
        wall = time.perf_counter() - start
        if len(outs) != len(prompts):
            raise ValueError(f"rollout policy returned {len(outs)} result lists for {len(prompts)} prompts")
        total_tokens = sum(int(getattr(c, "tokens", 0) or 0) for comps in outs for c in comps) or 1
        for (ci, k), comps in zip(requests, outs, strict=True):
            ok = sum(self._correct(getattr(c, "text", c), cases[ci]) for c in comps)
            tokens = sum(int(getattr(c, "tokens", 0) or 0) for c in comps)
            a = acc[ci]
            a["potential"][k] = (ok, len(comps))
            a["rollouts"] += len(comps)
            a["tokens_out"] += tokens
            a["seconds"] += wall * tokens / total_tokens

    def judge_many(self, cases: list[Case]) -> list[dict[str, Any]]:
        acc: list[dict[str, Any]] = [{"potential": {}, "rollouts": 0, "tokens_out": 0, "seconds": 0.0} for _ in cases]
        todo = [ci for ci, c in enumerate(cases) if c.qt_steps and c.gold_answer]
        for ci in todo:  # the full trace: graded, not rolled out
            right = cases[ci].qt_correct if cases[ci].qt_correct is not None else self._correct("\n".join(cases[ci].qt_steps), cases[ci])
            acc[ci]["potential"][len(cases[ci].qt_steps)] = (self.samples if right else 0, self.samples)
        if self.search == "linear":
            self._roll([(ci, k) for ci in todo for k in range(len(cases[ci].qt_steps))], cases, acc)
        else:
            self._roll([(ci, 0) for ci in todo], cases, acc)
            # bisect in lockstep: lo = last step known not collapsed, hi = first known collapsed
            bounds = {ci: (0, len(cases[ci].qt_steps)) for ci in todo if self._collapsed_at(acc[ci], len(cases[ci].qt_steps))}
            while True:
                requests = [(ci, (lo + hi) // 2) for ci, (lo, hi) in bounds.items() if hi - lo > 1]
                if not requests:
                    break
                self._roll(requests, cases, acc)
                for ci, mid in requests:
                    lo, hi = bounds[ci]
                    bounds[ci] = (lo, mid) if self._collapsed_at(acc[ci], mid) else (mid, hi)
        return [self._judgment(case, acc[ci]) for ci, case in enumerate(cases)]

    def judge(self, case: Case) -> dict[str, Any]:
        return self.judge_many([case])[0]

    def _collapsed_at(self, a: dict[str, Any], k: int) -> bool:
        pot = a["potential"]
        return 0 in pot and k in pot and collapsed(pot[0], pot[k], self.alpha, self.min_drop)

    def _judgment(self, case: Case, a: dict[str, Any]) -> dict[str, Any]:
        pot = a["potential"]
        curve = [[k, *pot[k]] for k in sorted(pot)]
        common = {"rollouts": a["rollouts"], "tokens_out": a["tokens_out"], "seconds": round(a["seconds"], 4), "potential": curve}
        if not case.qt_steps:
            return make_judgment(case, self, explanation="the trace has no steps to roll out from", **common)
        if not case.gold_answer:
            return make_judgment(case, self, explanation="no gold answer to grade rollouts against (judge-bench: --gold FILE)", **common)
        shown = ", ".join(f"p{k}={s}/{n}" for k, s, n in curve)
        known = [k for k in sorted(pot) if k >= 1]
        # the first step from which every prefix rolled out is collapsed: a dip that recovers at a later
        # prefix is sampling noise, not a faulty step (a wrong value propagates)
        step = next((k for i, k in enumerate(known) if all(self._collapsed_at(a, j) for j in known[i:])), None)
        if step is None:
            n = len(case.qt_steps)
            if pot[n][0] == pot[n][1]:  # the trace itself is right and nothing on the way collapsed
                return make_judgment(case, self, abstain=False, primary_error_type="no_error", explanation=f"no collapse ({shown})", **common)
            k0, n0 = pot[0]
            return make_judgment(case, self, explanation=(
                f"the policy reaches the answer from the problem alone in {k0} of {n0} rollouts: even a drop to 0 "
                f"is not significant (alpha {self.alpha}, min_drop {self.min_drop}); no step can be located ({shown})"), **common)  # fmt: skip
        return make_judgment(case, self, abstain=False, error_step=step, confidence_score=round(1 - pot[step][0] / pot[step][1] if pot[step][1] else 1.0, 4),
                             explanation=f"potential collapses at step {step} ({shown})", **common)  # fmt: skip


def policy_from_backend(generate: Callable[..., Any], *, temperature: float, top_p: float = 1.0,
                        max_new_tokens: int = 96, seed: int = 0, progress: bool = False) -> Policy:  # fmt: skip
    """A `Policy` from a backend's ``generate`` (or a resumable wrapper with the same keywords)."""

    def policy(prompts: list[str], n: int) -> list[list[Any]]:
        if not prompts:
            return []
        return generate(prompts, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        seed=seed, progress=progress)  # fmt: skip

    return policy


def policy_from_teacher(teacher: Callable[[list[str], int], list[list[str]]]) -> Policy:
    """A `Policy` from a text-only ``(prompts, n) -> n continuations per prompt`` callable, e.g. the
    endpoint teacher of `qmr.restore.llm_teacher` (token counts and seconds are not known: 0). A failed
    call (an empty continuation) is left out, not counted as a wrong rollout: the prefix's potential is
    estimated from the rollouts that came back."""
    from types import (
        SimpleNamespace,  # Completion-shaped (text, tokens, seconds) without importing the backends
    )

    def policy(prompts: list[str], n: int) -> list[list[Any]]:
        return [[SimpleNamespace(text=t, tokens=0, seconds=0.0) for t in conts if t] for conts in teacher(prompts, n)]

    return policy


def rollout_judge(name: str, spec: Any = None) -> RolloutJudge:
    if spec is None:
        return RolloutJudge(name)
    return RolloutJudge(name, samples=spec.samples, alpha=spec.alpha, min_drop=spec.min_drop, search=spec.search,
                        policy_name=spec.policy)  # fmt: skip
