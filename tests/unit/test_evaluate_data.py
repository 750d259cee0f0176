"""Loaders: the shared data files load; malformed records fail naming record and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from editing.evaluate import data as data_mod
from editing.evaluate.data import (
    DataError,
    Record,
    detect_dataset,
    load_records,
    parse_records,
    shared_data_dir,
)
from tests.shared_data import shared_data_file

GOOD: dict[str, Any] = {
    "id": 7,
    "subject": "Danielle Darrieux",
    "prompt": "The mother tongue of {} is",
    "target_new": "English",
    "target_true": "French",
    "paraphrase_prompts": ["Danielle Darrieux, a native"],
    "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
}


def broken(**changes: Any) -> list[dict[str, Any]]:
    """A two-record file whose second record has ``changes`` (None deletes a key)."""
    bad = copy.deepcopy(GOOD) | {"id": "r2"}
    for key, value in changes.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    return [GOOD, bad]


def test_shared_mcf_file_loads_as_counterfact() -> None:
    records = load_records(shared_data_file("mcf_dev.json"))
    assert len(records) == 1000
    assert all(r.request.target_true and len(r.request.neighborhood_prompts) == 10 for r in records)
    assert detect_dataset(records) == "counterfact"
    assert records[0].request.text == "The mother tongue of Danielle Darrieux is"


def test_shared_zsre_file_loads_as_zsre_with_answers() -> None:
    records = load_records(shared_data_file("zsre_dev.json"), limit=50)
    assert len(records) == 50
    assert detect_dataset(records) == "zsre"
    assert all(
        len(r.neighborhood_answers) == len(r.request.neighborhood_prompts) == 1 for r in records
    )
    assert records[0].request.target_true is None


def test_shared_data_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELEDIT_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": None}, "subject"),
        ({"target_new": None}, "target_new"),
        ({"prompt": "The mother tongue of X is"}, "prompt"),  # no {}
        ({"prompt": "{} and {}"}, "prompt"),
        ({"target_new": 5}, "target_new"),
        ({"subject": "   "}, "subject"),
        ({"target_true": ["French"]}, "target_true"),
        ({"paraphrase_prompts": "one string"}, "paraphrase_prompts"),
        ({"neighborhood_prompts": ["ok", 3]}, "neighborhood_prompts"),
        ({"neighborhood_prompts_answers": ["a", "b"]}, "neighborhood_prompts_answers"),
        ({"id": True}, "id"),
    ],
)
def test_malformed_record_names_record_and_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DataError) as err:
        parse_records(broken(**changes))
    assert err.value.index == 1
    assert err.value.field == field
    message = str(err.value)
    assert "record 1" in message and repr(field) in message
    if field != "id":
        assert "'r2'" in message  # the record's id, to find it in the file


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="list"):
        parse_records({"records": []})
    with pytest.raises(DataError, match="no records"):
        parse_records([])
    with pytest.raises(DataError, match="record 0: must be a JSON object"):
        parse_records(["not a record"])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_records(bad_json)
    with pytest.raises(DataError, match="neither a file nor a known dataset"):
        load_records(tmp_path / "missing.json")


def test_limit_keeps_the_first_records_but_validates_all(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([GOOD, GOOD | {"id": 8}, GOOD | {"id": 9}]))
    assert [r.id for r in load_records(path, limit=2)] == [7, 8]
    path.write_text(json.dumps(broken(subject=None)))
    with pytest.raises(DataError, match="record 1"):
        load_records(path, limit=1)
    with pytest.raises(DataError):
        load_records(path, limit=0)


def test_rome_counterfact_layout_is_converted() -> None:
    native = {
        "case_id": 3,
        "pararel_idx": 1,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": ["Danielle Darrieux, a native"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
        "attribute_prompts": [],
        "generation_prompts": [],
    }
    (record,) = parse_records([native])
    assert record.id == 3
    assert record.request.target_new == "English" and record.request.target_true == "French"
    assert record.request.paraphrase_prompts == ("Danielle Darrieux, a native",)
    bad = copy.deepcopy(native)
    bad["requested_rewrite"]["target_new"] = {"id": "Q1860"}
    with pytest.raises(DataError, match="requested_rewrite.target_new"):
        parse_records([bad])


def test_mend_zsre_layout_is_converted() -> None:
    native = {
        "subject": "Watts Humphrey",
        "src": "What university did Watts Humphrey attend?",
        "pred": "Trinity College",
        "rephrase": "What university did Watts Humphrey take part in?",
        "alt": "University of Michigan",
        "answers": ["Illinois Institute of Technology"],
        "loc": "nq question: who played desmond doss father in hacksaw ridge",
        "loc_ans": "Hugo Weaving",
        "cond": "Trinity College >> University of Michigan || "
        "What university did Watts Humphrey attend?",
    }
    (record,) = parse_records([native])
    assert isinstance(record, Record) and record.is_zsre
    assert record.request.prompt == "What university did {} attend?"
    assert record.request.target_new == "Illinois Institute of Technology"
    assert record.request.neighborhood_prompts == (native["loc"] + "?",)
    assert record.neighborhood_answers == ("Hugo Weaving",)
    with pytest.raises(DataError, match="'src'"):
        parse_records([native | {"src": "What university did he attend?"}])


def test_dataset_name_downloads_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The download path, exercised offline through a file:// URL."""
    source = tmp_path / "remote.json"
    source.write_text(json.dumps([GOOD]))
    monkeypatch.setitem(data_mod.REMOTE_DATASETS, "mcf", source.as_uri())
    cache = tmp_path / "cache"
    records = load_records("mcf", download_dir=cache)
    assert [r.id for r in records] == [7]
    assert (cache / "remote.json").exists()
    source.unlink()  # a second load reads the cached copy
    assert len(load_records("mcf", download_dir=cache)) == 1
    monkeypatch.setitem(data_mod.REMOTE_DATASETS, "zsre", (tmp_path / "gone.json").as_uri())
    with pytest.raises(DataError, match="cannot download zsre"):
        load_records("zsre", download_dir=cache)
