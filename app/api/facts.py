"""``/facts``: search the facts a version knows (its lineage's batches), which version taught
each, and whether a later batch overrode it. The web console's ledger page reads the same
endpoint, so scripts get the same answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from app.api.deps import get_store
from app.api.errors import ApiError
from app.api.schemas import (
    MAX_FACTS_PAGE,
    VERSION_ID_PATTERN,
    ErrorOut,
    FactsPage,
    LedgerFact,
    control_character,
)
from app.api.security import require_read
from app.store import NotFound, VersionStore, ledger

router = APIRouter(tags=["facts"])

MAX_QUERY = 200


def _check_query(q: str | None) -> str | None:
    """Control characters are never part of a fact: refuse them with a message, not a 500."""
    if q is None:
        return None
    problem = control_character(q)  # the rule facts themselves follow
    if problem is not None:
        raise ApiError(422, f"q: {problem}", field="q")
    return q.strip() or None


@router.get(
    "/facts",
    response_model=FactsPage,
    summary="Search the facts a version knows, who taught them, and what was overridden",
    responses={404: {"model": ErrorOut, "description": "unknown version"}},
)
def list_facts(
    q: str | None = Query(
        None, max_length=MAX_QUERY,
        description="case-insensitive text to find in the subject, prompt or targets",
        examples=["darrieux"],
    ),
    version: str | None = Query(
        None, min_length=1, max_length=128, pattern=VERSION_ID_PATTERN,
        description="the version whose lineage to search (default: the active version)",
        examples=["v1"],
    ),
    limit: int = Query(50, ge=1, le=MAX_FACTS_PAGE, description="facts per page"),
    offset: int = Query(0, ge=0, le=10_000_000, description="facts to skip"),
    store: VersionStore = Depends(get_store),
    _who: str = Depends(require_read),
) -> FactsPage:
    """Newest batch first. A fact is `current` unless a later version of the same lineage
    taught the same subject + prompt again (`overridden_by` names it). Facts of versions
    outside the lineage (e.g. rolled-back branches, reverted batches) are not listed."""
    query = _check_query(q)
    active = store.active_version()
    target = version or active
    try:
        chain = store.chain(target)
    except NotFound as exc:
        raise ApiError(404, str(exc), field="version") from exc
    found = ledger.search(chain, query)
    page = found[offset:offset + limit]
    return FactsPage(
        version=target,
        active=target == active,
        q=query,
        total=len(found),
        limit=limit,
        offset=offset,
        next_offset=offset + limit if offset + limit < len(found) else None,
        facts=[LedgerFact(subject=e.subject, prompt=e.prompt, text=e.text,
                          target_new=e.target_new, target_true=e.target_true,
                          paraphrase_prompts=list(e.paraphrase_prompts), taught_by=e.taught_by,
                          taught_at=e.taught_at, overridden_by=e.overridden_by,
                          current=e.current)
               for e in page],
    )
