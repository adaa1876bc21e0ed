"""Propose a first mapping by matching source column names to target field names.

Names are compared after normalising them: camelCase is split, case, underscores, spaces, dashes and dots are
ignored, and a few common synonyms and abbreviations are folded (e-mail/email, tel/phone, qty/quantity, ...).
The proposal is a starting point for a person to review, so only confident matches are made.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from connector_pipelines.mapping.engine import TargetField
from connector_pipelines.mapping.suggest import did_you_mean

# Below this a match is a guess a reviewer would have to undo more often than keep.
THRESHOLD = 0.8

# Whole names that mean the same thing (compared with separators removed).
_PHRASES = {
    "emailaddress": "email",
    "mail": "email",
    "phonenumber": "phone",
    "telephone": "phone",
    "telephonenumber": "phone",
    "tel": "phone",
    "zip": "postcode",
    "zipcode": "postcode",
    "postalcode": "postcode",
    "surname": "lastname",
    "familyname": "lastname",
    "givenname": "firstname",
    "forename": "firstname",
    "dob": "dateofbirth",
    "birthdate": "dateofbirth",
}
# Abbreviations inside longer names: order_no -> order number, unit_qty -> unit quantity.
_TOKENS = {
    "no": "number",
    "nr": "number",
    "num": "number",
    "nbr": "number",
    "qty": "quantity",
    "amt": "amount",
    "addr": "address",
    "desc": "description",
    "tel": "phone",
    "mail": "email",
}
_CANONICAL = frozenset(_PHRASES.values())


@dataclass(frozen=True)
class Proposal:
    """A proposed rule: copy `source` into `target`; `score` is 1.0 for an exact name match."""

    source: str
    target: str
    score: float


def name_tokens(name: str) -> tuple[str, ...]:
    """Lower-case words of a name: 'customerID' -> ('customer', 'id'), 'first-name' -> ('first', 'name')."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)  # HTTPCode -> HTTP Code
    return tuple(token for token in re.split(r"[^a-z0-9]+", spaced.lower()) if token)


def canonical_name(name: str) -> str:
    """A name with separators removed and synonyms folded, for comparing names of different styles."""
    tokens = name_tokens(name)
    joined = "".join(tokens)
    if joined in _PHRASES:
        return _PHRASES[joined]
    if joined in _CANONICAL:
        return joined  # 'e-mail' is already 'email': do not expand its 'mail' token again
    joined = "".join(_TOKENS.get(token, token) for token in tokens)
    return _PHRASES.get(joined, joined)


def name_similarity(source: str, target: str) -> float:
    """1.0 equal, 0.98 same words, 0.95 same after synonyms, else a string-similarity ratio below 0.95."""
    if source == target:
        return 1.0
    if name_tokens(source) == name_tokens(target):
        return 0.98
    left, right = canonical_name(source), canonical_name(target)
    if left == right:
        return 0.95
    return min(0.94, difflib.SequenceMatcher(None, left, right).ratio())


def propose_mapping(
    source_columns: Sequence[str], target_fields: Sequence[TargetField], keys: Sequence[str] = ()
) -> list[Proposal]:
    """Match source columns to target fields by name; each is used at most once, key targets first.

    Only matches scoring at least THRESHOLD are proposed. The result lists key targets first (in `keys` order),
    then the other targets in their declared order. Raise ValueError for a key that is not a target field.
    """
    target_names = [field.name for field in target_fields]
    for key in keys:
        if key not in target_names:
            raise ValueError(
                f"key '{key}' is not a target field{did_you_mean(key, target_names)}; "
                f"target fields: {', '.join(target_names)}"
            )
    candidates = [
        (score, target_index, source_index)
        for target_index, target in enumerate(target_names)
        for source_index, source in enumerate(source_columns)
        if (score := name_similarity(source, target)) >= THRESHOLD
    ]
    # Best score first; ties go to the earlier target, then the earlier source, so the result is stable.
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[2]))
    key_set = set(keys)
    chosen: dict[int, Proposal] = {}
    used_sources: set[int] = set()
    # Keys are matched first: a key column matched to the wrong field breaks every row, a plain field one value.
    for keys_pass in (True, False):
        for score, target_index, source_index in candidates:
            if (target_names[target_index] in key_set) != keys_pass:
                continue
            if target_index in chosen or source_index in used_sources:
                continue
            chosen[target_index] = Proposal(source_columns[source_index], target_names[target_index], round(score, 2))
            used_sources.add(source_index)
    key_order = {key: position for position, key in enumerate(keys)}
    return sorted(
        chosen.values(),
        key=lambda proposal: (
            proposal.target not in key_set,
            key_order.get(proposal.target, 0),
            target_names.index(proposal.target),
        ),
    )
