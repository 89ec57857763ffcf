"""Team-Draft interleaving and its click credit (re-exported by :mod:`serving.routing`).

Interleaving shows one list drafted from two rankers' lists; a click on a document credits
the team (ranker) that placed it, which compares two rankers with far fewer users than an
A/B test needs.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal, TypedDict


class InterleaveCredit(TypedDict):
    """Clicked documents per team and the winner of one impression."""

    a: int
    b: int
    winner: Literal["a", "b", "tie"]


def _seeded_rng(rng_seed: str) -> random.Random:
    digest = hashlib.sha256(rng_seed.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def team_draft_interleave(
    ranking_a: list[str], ranking_b: list[str], *, rng_seed: str, k: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """Team-Draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008).

    The team with fewer picks picks next; on a tie a coin flip decides; a team picks its
    highest-ranked document not yet shown. Stops when one ranking has no unshown document
    left (or after ``k`` documents). Documents only the other ranking still has are appended
    *without* a team, so they earn no credit (with two rankings of the same candidates there
    are none). Coin flips come from ``random.Random`` seeded by SHA-256 of ``rng_seed`` (use
    the request id), so the result can be recomputed. Returns the interleaved doc ids and
    ``{doc_id: "a" | "b"}`` for the attributed ones.
    """
    limit = k if k is not None else len(set(ranking_a) | set(ranking_b))
    rng = _seeded_rng(rng_seed)
    shown: list[str] = []
    team: dict[str, str] = {}
    placed: set[str] = set()
    pos = {"a": 0, "b": 0}
    lists = {"a": ranking_a, "b": ranking_b}
    size = {"a": 0, "b": 0}

    def next_unplaced(side: str) -> str | None:
        ranking = lists[side]
        while pos[side] < len(ranking) and ranking[pos[side]] in placed:
            pos[side] += 1
        return ranking[pos[side]] if pos[side] < len(ranking) else None

    while len(shown) < limit:
        if next_unplaced("a") is None or next_unplaced("b") is None:
            break
        if size["a"] < size["b"]:
            side = "a"
        elif size["b"] < size["a"]:
            side = "b"
        else:
            side = "a" if rng.random() < 0.5 else "b"
        doc = next_unplaced(side)
        if doc is None:  # unreachable: both sides were checked above
            break
        shown.append(doc)
        placed.add(doc)
        team[doc] = side
        size[side] += 1
    for doc in (*ranking_a, *ranking_b):
        if len(shown) >= limit:
            break
        if doc not in placed:
            shown.append(doc)
            placed.add(doc)
    return shown, team


def interleave_credit(
    attribution: dict[str, str], clicked_doc_ids: list[str] | set[str]
) -> InterleaveCredit:
    """Clicks per team (each clicked document counted once; unattributed clicks ignored)."""
    clicked = set(clicked_doc_ids)
    a = sum(1 for doc in clicked if attribution.get(doc) == "a")
    b = sum(1 for doc in clicked if attribution.get(doc) == "b")
    winner: Literal["a", "b", "tie"] = "a" if a > b else "b" if b > a else "tie"
    return {"a": a, "b": b, "winner": winner}
