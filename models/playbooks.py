"""The playbooks Replicante knows, per datastore kind: the names a spec's `remediation`
section may give a policy to, the findings each answers, whether each acts on one node.

A new playbook is one entry here and one in models/plans.py `PLANS` (its planner), which
tests/test_plans.py holds to the same names. The two stay apart because the spec validates
its policies against these names, and the planners take specs.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.base import Kind


@dataclass(frozen=True)
class Playbook:
    name: str
    summary: str
    answers: tuple[str, ...] = ()
    """Finding codes that start this playbook when its policy is approve or auto; empty for
    playbooks an operator starts by hand (`replicante remediate`)."""
    needs_target: bool = False
    """It acts on one node, named by the request (or the finding's subject)."""


def _by_name(*playbooks: Playbook) -> dict[str, Playbook]:
    return {p.name: p for p in playbooks}


PLAYBOOKS: dict[Kind, dict[str, Playbook]] = {
    Kind.ZOOKEEPER: _by_name(
        Playbook(
            "restart_dead_member",
            "start a member that is down (never one whose stop would lose quorum)",
            answers=("node_down",),
            needs_target=True,
        ),
        Playbook(
            "rolling_restart",
            "restart every member, followers first and the leader last, each rejoined"
            " and synced before the next",
        ),
    ),
    Kind.KAFKA: _by_name(
        Playbook(
            "restart_dead_broker",
            "start a broker that is down",
            answers=("node_down",),
            needs_target=True,
        ),
        Playbook(
            "preferred_leader_election",
            "move partition leadership back to in-sync preferred replicas",
            answers=("leader_not_preferred",),
        ),
        Playbook(
            "rolling_restart",
            "restart every broker, waiting for zero under-replicated partitions between"
            " brokers; never one whose stop drops a partition below min ISR",
        ),
    ),
    Kind.MONGODB: _by_name(
        Playbook(
            "restart_dead_member",
            "start a member that is down",
            answers=("node_down",),
            needs_target=True,
        ),
        Playbook(
            "step_down_primary",
            "hand the primary role to an electable secondary within the lag threshold",
        ),
    ),
}


def playbook_of(kind: Kind, name: str) -> Playbook:
    """The playbook `name` of `kind`; a ValueError names the ones there are.

    >>> playbook_of(Kind.KAFKA, "restart_dead_broker").answers
    ('node_down',)
    """
    known = PLAYBOOKS.get(kind, {})
    if name not in known:
        raise ValueError(f"{name!r} is not a {kind} playbook (known: {', '.join(sorted(known))})")
    return known[name]


def check_playbooks(kind: Kind, names: list[str]) -> None:
    """Raise naming the first name that is no playbook of `kind`.

    >>> check_playbooks(Kind.MONGODB, ["rolling_restart"])
    Traceback (most recent call last):
    ...
    ValueError: 'rolling_restart' is not a mongodb playbook (known: restart_dead_member, ...)
    """
    for name in names:
        playbook_of(kind, name)
