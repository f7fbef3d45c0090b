"""The playbooks Replicante knows, per datastore kind: the names a spec's `remediation`
section may give a policy to, and the findings each answers.

Only names and meanings live here (the spec validates against them); the steps each
playbook takes are the remediation workflow's business.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Playbook:
    name: str
    summary: str
    answers: tuple[str, ...] = ()
    """Finding codes that start this playbook when its policy is approve or auto; empty for
    playbooks an operator starts by hand (`replicante remediate`)."""


PLAYBOOKS: dict[str, dict[str, Playbook]] = {
    "zookeeper": {
        p.name: p
        for p in (
            Playbook(
                "restart_dead_member",
                "start a member that is down (never one whose stop would lose quorum)",
                ("node_down",),
            ),
            Playbook(
                "rolling_restart",
                "restart every member, followers first and the leader last, each rejoined"
                " and synced before the next",
            ),
        )
    },
    "kafka": {
        p.name: p
        for p in (
            Playbook("restart_dead_broker", "start a broker that is down", ("node_down",)),
            Playbook(
                "preferred_leader_election",
                "move partition leadership back to in-sync preferred replicas",
                ("leader_not_preferred",),
            ),
            Playbook(
                "rolling_restart",
                "restart every broker, waiting for zero under-replicated partitions between"
                " brokers; never one whose stop drops a partition below min ISR",
            ),
        )
    },
    "mongodb": {
        p.name: p
        for p in (
            Playbook("restart_dead_member", "start a member that is down", ("node_down",)),
            Playbook(
                "step_down_primary",
                "hand the primary role to an electable secondary within the lag threshold",
            ),
        )
    },
}


def check_playbooks(kind: str, names: list[str]) -> None:
    """Raise naming the first name that is no playbook of `kind`.

    >>> check_playbooks("mongodb", ["rolling_restart"])
    Traceback (most recent call last):
    ...
    ValueError: 'rolling_restart' is not a mongodb playbook (known: restart_dead_member, ...)
    """
    known = PLAYBOOKS.get(kind, {})
    for name in names:
        if name not in known:
            raise ValueError(
                f"{name!r} is not a {kind} playbook (known: {', '.join(sorted(known))})"
            )
