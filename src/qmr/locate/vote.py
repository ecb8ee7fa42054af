"""The voting protocol (paper §3.1.3), generalized to a baseline judge plus N auxiliaries.

A judge's **vote** is its ``(primary_error_type, error_step)``; ``no_error`` votes ``("no_error",
None)``. Only *speakers* vote: a judgment that is present, valid and not abstaining. Invalid replies,
failed calls, abstentions and absent judgments (e.g. skipped by cheap-first) are recorded in ``votes``
as ``"invalid"`` / ``"abstain"`` (absent ones are left out) and never count for or against.

Agreement is on ``(type, step)`` by default (``match: type_step``): "the same first error" means the
same step and the same type. With ``match: type`` only the type must agree and the label takes the
earliest step among the agreeing judges.

**Specialists.** A judge kind declares what it can see (its ``sees`` trait in
`qmr.locate.judges.JUDGE_KINDS`): every type (``all``: ``reference``, ``llm``), only computational errors
(``computational``: ``arithmetic``), or only the step (``step``: a step-only locator, whose vote may carry
no type and shows as ``"step_only"`` in ``votes``). Judges that see all are compared exactly as above. A
specialist agrees with the anchor when its finding is *consistent* with it (`relation`): the same vote;
a later step than the anchor's when the anchor's type is one it cannot see (the anchor's error comes
first and is invisible to it); the anchor's step, or "no error", when the anchor's type is one it cannot
see; a step-only judge at the anchor's step. An earlier error than the anchor's still disagrees. The
label records each speaker's ``relations`` to the anchor (``same``, ``later_step``, ``unseen_type``,
``same_step`` or ``differs``); type, step and confidence come from the anchor and the judges that vouch
for it (``same``/``same_step``), never from a merely consistent finding. A typeless (step-only) anchor
takes its type from the typed judges at its step (earliest precedence; None when there are none).

The **anchor** is the baseline's vote. If the baseline does not speak, the anchor is the vote that
most speakers agree with — with judges that see all, the plurality vote — (ties: earliest-precedence
type, then earliest step) and the label says ``anchor: "plurality"``. ``agree`` counts the speakers
agreeing with the anchor (the anchor included).

Rules, with N = 1 + len(auxiliaries) judges and ``threshold`` t (default ``ceil(0.75 N)``: 4 of 5 —
the paper's "baseline + 3 of 4 auxiliaries"; 3 of 4; 3 of 3; 2 of 2):

- nobody speaks -> ``abstain_all`` (needs a human);
- fewer than ``min_votes`` speakers -> ``escalated`` (default 2: a lone judge, even the offline
  ``reference`` one, never decides alone; set ``min_votes: 1`` to accept a single speaker);
- every speaker agrees with the anchor -> ``unanimous`` (rule 1), accepted;
- ``agree >= t_eff`` -> ``threshold`` (rule 2), accepted; the threshold scales with the speakers:
  ``t_eff = max(min_votes, ceil(t * speakers / N))`` (all 5 speak: 4; 4 speak: 4 of 4; 3 speak: 3);
- otherwise -> ``escalated`` (rule 3), needs two humans.

Label: ``id, variant, sample, primary_error_type, category, error_step, rule, votes{judge: type |
"abstain" | "invalid"}, steps{judge: step}, relations{speaker: relation}, needs_human, audit, anchor, agree, speakers, threshold
(the effective one), confidence`` (mean over the judges that vouch for the anchor), ``proposal``.

An escalated label carries no type/step (``primary_error_type: None``) and shows the machine's
``proposal``; it gets a value only from a human verdict (rule ``human``). A ``no_error`` consensus is
accepted like any other answer (category None).

**Audit**: of the accepted labels of one variant, ``ceil(audit_fraction * n_accepted)`` (at least one
when ``audit_fraction > 0`` and anything was accepted) are drawn for human audit, by the smallest
``sha256(seed:variant:id)`` — stable when cases are added or removed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

from qmr.config import SEED_MAX, Problem, field
from qmr.locate.judges import SIGHTS, sight_of, speaks
from qmr.locate.taxonomy import NO_ERROR, TYPES, category_of, earliest, rank

# The one home of the vote's rule names: the machine accepts by unanimity or threshold; a human verdict
# also decides; everything else is undecided.
MACHINE_ACCEPTED = ("unanimous", "threshold")
ACCEPTED_RULES = (*MACHINE_ACCEPTED, "human")
RULES = (*ACCEPTED_RULES, "escalated", "abstain_all")


@dataclass
class VoteSpec:
    """Which judges vote and how many must agree."""

    baseline: str = field("", help="the baseline judge's name (paper: DeepSeek-R1)")
    auxiliaries: list[str] = field(default_factory=list, help="auxiliary judges' names")
    threshold: int | None = field(
        None,
        help="agreeing votes needed among all judges incl. the baseline (null: ceil(0.75 * judges) = 4 of 5)",
    )
    min_votes: int = field(
        2, help="fewest speaking (valid, non-abstaining) judges needed to accept without a human"
    )
    match: Literal["type_step", "type"] = field("type_step", help="agreement on (type, step) or on type only")
    audit_fraction: float = field(0.02, help="share of accepted labels drawn for human audit (at least one)")
    seed: int = field(0, help="seed of the audit draw", ge=0, le=SEED_MAX)

    @property
    def judges(self) -> list[str]:
        return [self.baseline, *self.auxiliaries]

    @property
    def n_judges(self) -> int:
        return 1 + len(self.auxiliaries)

    @property
    def threshold_value(self) -> int:
        return self.threshold if self.threshold is not None else max(1, math.ceil(0.75 * self.n_judges))

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if not self.baseline:
            out.append(Problem(f"{p}baseline", self.baseline, "a judge name"))
        if self.baseline in self.auxiliaries:
            out.append(
                Problem(
                    f"{p}auxiliaries", self.auxiliaries, f"names other than the baseline {self.baseline!r}"
                )
            )
        twice = sorted({a for a in self.auxiliaries if self.auxiliaries.count(a) > 1})
        if twice:
            out.append(Problem(f"{p}auxiliaries", self.auxiliaries, f"each name once (listed more than once: {', '.join(twice)})"))
        if self.threshold is not None and not 1 <= self.threshold <= self.n_judges:
            out.append(
                Problem(
                    f"{p}threshold", self.threshold, f"null or an integer in 1..{self.n_judges} (the judges)"
                )
            )
        if not 1 <= self.min_votes <= self.n_judges:
            out.append(Problem(f"{p}min_votes", self.min_votes, f"an integer in 1..{self.n_judges}"))
        if not 0.0 <= self.audit_fraction <= 1.0:
            out.append(Problem(f"{p}audit_fraction", self.audit_fraction, "a number in [0, 1]"))
        return out


Vote = tuple[str | None, int | None]

#: how a speaker's vote stands to the anchor's: it agrees (the first four) or it does not
RELATIONS = ("same", "later_step", "unseen_type", "same_step", "differs")


def _vote_of(j: dict[str, Any]) -> Vote:
    t = j["primary_error_type"]
    return (t, None if t == NO_ERROR else j.get("error_step"))


def _tie_key(v: Vote) -> tuple[int, int]:
    return (rank(v[0]) if v[0] is not None else len(TYPES) + 1, v[1] if v[1] is not None else 10**9)


def relation(vote: Vote, anchor: Vote, sees: str = "all", match: str = "type_step") -> str:
    """How ``vote``, from a judge that sees ``sees`` (a key of `SIGHTS`), stands to ``anchor``.

    A judge that sees every type (``all``) is compared as in the paper: ``same`` when the votes match
    (``match``), else ``differs``. A specialist's finding is *consistent* with an anchor error it could
    not have seen:

    - ``later_step``: an error at a later step than the anchor's, of a type the anchor's is not among
      the specialist's (``arithmetic`` finds a slip at step 5; the anchor's contextual oversight at
      step 2 comes first and is invisible to it);
    - ``unseen_type``: an error at the anchor's step, or "no error", when the anchor's type is one it
      cannot see;
    - ``same_step``: a step-only judge (``step``) at the anchor's step, or any judge at the step of a
      typeless (step-only) anchor.

    Anything else ``differs``: an earlier error than the anchor's, an error when the anchor says
    ``no_error``, a different type it can see at the same step, a "no error" against an error it can
    see.
    """
    if vote == anchor:
        return "same"
    if sees == "all" and vote[0] is not None and anchor[0] is not None:
        same = vote == anchor if match == "type_step" else vote[0] == anchor[0]
        return "same" if same else "differs"
    seen = SIGHTS.get(sees, TYPES)
    (vt, vs), (at, as_) = vote, anchor
    if at == NO_ERROR or vt == NO_ERROR:
        if vt == at:
            return "same"
        return "unseen_type" if vt == NO_ERROR and at is not None and at not in seen else "differs"
    # both found an error; the anchor's type is None for a step-only anchor
    typeless = sees == "step" or vt is None or at is None
    if not typeless and (match == "type" or vs is None or as_ is None):  # compare the types only
        return "same" if vt == at else ("unseen_type" if at not in seen else "differs")
    if vs is None or as_ is None:
        return "differs"
    if vs == as_:
        if typeless:
            return "same_step"
        if at not in seen:
            return "unseen_type"
        return "same" if vt == at else "differs"
    if vs > as_ and sees != "step" and at is not None and at not in seen:
        return "later_step"
    return "differs"


def vote_case(
    judgments_by_judge: dict[str, dict[str, Any]],
    spec: VoteSpec,
    case_id: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """The label of one case from its judges' judgments (keyed by judge name; extra judges ignored).
    What each judge can see comes from its judgment's ``kind`` (`qmr.locate.judges.sight_of`)."""
    any_j = next(iter(judgments_by_judge.values()), {})
    case_id = case_id if case_id is not None else any_j.get("id")
    variant = variant if variant is not None else any_j.get("variant")
    votes: dict[str, str] = {}
    steps: dict[str, int | None] = {}
    speakers: dict[str, Vote] = {}
    sight: dict[str, str] = {}
    confidences: dict[str, float | None] = {}
    for name in spec.judges:
        j = judgments_by_judge.get(name)
        if j is None:
            continue
        if speaks(j):
            v = _vote_of(j)
            speakers[name] = v
            sight[name] = sight_of(j.get("kind"))
            votes[name] = v[0] if v[0] is not None else "step_only"
            steps[name] = v[1]
            confidences[name] = j.get("confidence_score")
        else:
            votes[name] = "invalid" if not j.get("valid") else "abstain"
            steps[name] = None

    def support(candidate: Vote) -> int:
        return sum(relation(v, candidate, sight[n], spec.match) != "differs" for n, v in speakers.items())

    n_speak = len(speakers)
    t = spec.threshold_value
    t_eff = max(spec.min_votes, math.ceil(t * n_speak / spec.n_judges)) if n_speak else t
    anchor_name: str | None = None
    anchor: Vote | None = None
    if spec.baseline in speakers:
        anchor_name, anchor = spec.baseline, speakers[spec.baseline]
    elif speakers:
        # the vote most speakers agree with (judges that see all: the plurality vote)
        candidates = {v if spec.match == "type_step" or v[0] is None else (v[0], None) for v in speakers.values()}
        backing = {v: support(v) for v in candidates}
        best = max(backing.values())
        anchor = min((v for v, c in backing.items() if c == best), key=_tie_key)
        anchor_name = "plurality"
    relations = {n: relation(v, anchor, sight[n], spec.match) for n, v in speakers.items()} if anchor else {}
    agreeing = [n for n, r in relations.items() if r != "differs"]
    agree = len(agreeing)
    if n_speak == 0:
        rule = "abstain_all"
    elif n_speak < spec.min_votes:
        rule = "escalated"
    elif agree == n_speak:
        rule = "unanimous"
    elif agree >= t_eff:
        rule = "threshold"
    else:
        rule = "escalated"
    accepted = rule in MACHINE_ACCEPTED
    # the judges that vouch for the anchor itself (not only do not contradict it)
    backers = [n for n in agreeing if relations[n] in ("same", "same_step")]
    etype: str | None = None
    step: int | None = None
    if anchor is not None:
        etype = anchor[0]
        if etype is None:  # a step-only anchor: the type comes from the typed judges at its step
            etype = earliest(
                speakers[n][0] for n in backers if speakers[n][0] not in (None, NO_ERROR)
            )
        if spec.match == "type_step" or etype == NO_ERROR:
            step = anchor[1]
        else:
            agreeing_steps = [speakers[n][1] for n in backers if speakers[n][1] is not None]
            step = min(agreeing_steps) if agreeing_steps else anchor[1]
    confs = [confidences[n] for n in backers if confidences.get(n) is not None]
    sample = next((j.get("sample") for j in judgments_by_judge.values() if j.get("sample") is not None), None)
    label: dict[str, Any] = {
        "id": case_id,
        "variant": variant,
        "sample": sample,
        "primary_error_type": etype if accepted else None,
        "category": category_of(etype) if accepted else None,
        "error_step": step if accepted else None,
        "rule": rule,
        "votes": votes,
        "steps": steps,
        "relations": relations,
        "needs_human": not accepted,
        "audit": False,
        "anchor": anchor_name,
        "agree": agree,
        "speakers": n_speak,
        "threshold": t_eff,
        "confidence": round(sum(confs) / len(confs), 4) if confs else None,  # type: ignore[arg-type]
        "proposal": None if accepted or anchor is None else {"primary_error_type": etype, "error_step": step},
    }
    return label


def _audit_order(seed: int, variant: str | None, case_id: str) -> str:
    return hashlib.sha256(f"{seed}:{variant}:{case_id}".encode()).hexdigest()


def draw_audit(labels: list[dict[str, Any]], fraction: float, seed: int) -> set[str]:
    """Ids of the accepted labels drawn for audit (see the module docstring)."""
    accepted = [lab for lab in labels if lab["rule"] in MACHINE_ACCEPTED]
    if not accepted or fraction <= 0:
        return set()
    k = min(len(accepted), max(1, math.ceil(fraction * len(accepted))))
    ranked = sorted(accepted, key=lambda lab: _audit_order(seed, lab.get("variant"), str(lab["id"])))
    return {str(lab["id"]) for lab in ranked[:k]}


def group_judgments(judgments: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{case id: {judge: judgment}} (a later judgment of the same judge and case wins)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for j in judgments:
        out.setdefault(str(j["id"]), {})[j["judge"]] = j
    return out


def vote_all(
    judgments: list[dict[str, Any]],
    spec: VoteSpec,
    case_ids: list[str] | None = None,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """Labels for every case (``case_ids`` order; default: first appearance in ``judgments``), with the
    audit sample marked (``audit: True``)."""
    grouped = group_judgments(judgments)
    ids = case_ids if case_ids is not None else list(grouped)
    labels = []
    for cid in ids:
        by_judge = grouped.get(str(cid), {})
        any_j = next(iter(by_judge.values()), {})
        labels.append(vote_case(by_judge, spec, case_id=str(cid), variant=variant or any_j.get("variant")))
    audit = draw_audit(labels, spec.audit_fraction, spec.seed)
    for lab in labels:
        lab["audit"] = str(lab["id"]) in audit
    return labels
