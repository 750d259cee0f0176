"""The facts ledger's rules (app/store/ledger.py): newest batch first, overridden facts named by the
later version that taught the same subject + prompt, search over subject, prompt and targets."""

from __future__ import annotations

from app.store import Version
from app.store.ledger import fact_key, ledger, search

DARRIEUX = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
            "target_new": "English", "target_true": "French"}
YASUDA = {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "guitar"}
DARRIEUX_AGAIN = {"subject": " danielle darrieux", "prompt": "The Mother tongue of {} is",
                  "target_new": "German"}


def chain() -> list[Version]:
    return [
        Version(id="v0", seq=1, parent=None, kind="base"),
        Version(id="v1", seq=2, parent="v0", kind="edit", facts=[DARRIEUX, YASUDA],
                created_at="2026-01-01T00:00:00.000Z"),
        Version(id="v2", seq=3, parent="v1", kind="edit", facts=[DARRIEUX_AGAIN]),
    ]


def test_newest_first_and_overridden_by_the_later_batch() -> None:
    entries = ledger(chain())
    assert [(e.taught_by, e.target_new, e.overridden_by) for e in entries] == [
        ("v2", "German", None), ("v1", "English", "v2"), ("v1", "guitar", None)]
    assert [e.current for e in entries] == [True, False, True]
    assert entries[1].text == "The mother tongue of Danielle Darrieux is"
    assert entries[1].taught_at == "2026-01-01T00:00:00.000Z"
    assert fact_key(DARRIEUX) == fact_key(DARRIEUX_AGAIN)


def test_only_the_lineage_counts() -> None:
    """A version outside the chain (a rolled-back branch) overrides nothing."""
    assert all(e.current for e in ledger(chain()[:2]))


def test_search_is_case_insensitive_over_every_text_field() -> None:
    assert [e.target_new for e in search(chain(), "DARRIEUX")] == ["German", "English"]
    assert [e.target_new for e in search(chain(), "guitar")] == ["guitar"]
    assert [e.target_new for e in search(chain(), "french")] == ["English"]  # target_true
    assert [e.target_new for e in search(chain(), "darrieux is")] == ["German", "English"]
    assert len(search(chain(), None)) == len(search(chain(), "  ")) == 3
    assert search(chain(), "nothing like this") == []
