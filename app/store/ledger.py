"""The facts ledger: which facts a version knows, which batch taught each, and which were
overridden by a later batch of the same lineage.

Pure functions over a version chain (base first, as :meth:`VersionStore.chain` returns it), so
the ``GET /facts`` endpoint and the web console give the same answer and the rules are tested
without a server. A fact is identified by its subject and prompt (whitespace-trimmed,
case-folded): teaching the same subject + prompt again later in the chain overrides the
earlier target, which is what the weights then say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.store import Version


@dataclass(frozen=True)
class LedgerEntry:
    """One fact as taught by one version of the chain."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrase_prompts: tuple[str, ...]
    taught_by: str
    taught_at: str | None
    overridden_by: str | None

    @property
    def text(self) -> str:
        """The prompt with the subject in its slot, as the model reads it."""
        return self.prompt.replace("{}", self.subject, 1)

    @property
    def current(self) -> bool:
        return self.overridden_by is None


def fact_key(fact: dict[str, Any]) -> tuple[str, str]:
    """What makes two facts "the same question": subject and prompt, trimmed and case-folded."""
    return (str(fact.get("subject", "")).strip().casefold(),
            str(fact.get("prompt", "")).strip().casefold())


def ledger(chain: list[Version]) -> list[LedgerEntry]:
    """Every fact taught along ``chain``, newest batch first (within a batch, in order).

    ``overridden_by`` names the *next* later version that taught the same subject + prompt.
    """
    later: dict[tuple[str, str], str] = {}
    entries: list[LedgerEntry] = []
    for version in reversed(chain):
        seen_here: dict[tuple[str, str], str] = {}
        batch: list[LedgerEntry] = []
        for fact in version.facts or []:
            if not isinstance(fact, dict):
                continue
            key = fact_key(fact)
            batch.append(LedgerEntry(
                subject=str(fact.get("subject", "")),
                prompt=str(fact.get("prompt", "")),
                target_new=str(fact.get("target_new", "")),
                target_true=fact.get("target_true"),
                paraphrase_prompts=tuple(fact.get("paraphrase_prompts") or ()),
                taught_by=version.id,
                taught_at=version.created_at or None,
                overridden_by=later.get(key),
            ))
            seen_here[key] = version.id
        entries.extend(batch)
        later.update(seen_here)
    return entries


def matches(entry: LedgerEntry, query: str) -> bool:
    """Case-insensitive substring search over subject, prompt, filled-in text and targets."""
    needle = query.strip().casefold()
    if not needle:
        return True
    fields = (entry.subject, entry.prompt, entry.text, entry.target_new, entry.target_true or "")
    return any(needle in field.casefold() for field in fields)


def search(chain: list[Version], query: str | None) -> list[LedgerEntry]:
    """The ledger of ``chain`` filtered by ``query`` (None or blank: everything)."""
    entries = ledger(chain)
    if query is None:
        return entries
    return [e for e in entries if matches(e, query)]
