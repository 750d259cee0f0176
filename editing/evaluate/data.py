"""Load CounterFact / zsRE evaluation records, checked field by field before any compute.

Our format is the one in ``shared/data/README.md`` (a JSON list of flat records). The
public ROME/MEMIT files use other layouts (``requested_rewrite`` for CounterFact, the MEND
``src``/``loc`` layout for zsRE); :func:`parse_records` recognises and converts them, so a
file downloaded from the datasets' public locations loads the same way as a local one.
A bad record fails loudly with its position, id and field: a silently skipped record would
change the numbers a researcher compares.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editing.paths import shared_data_dir as shared_data_dir  # re-export
from editing.requests import EditRequest, InvalidEditRequest
from models.files import atomic_file

log = logging.getLogger(__name__)

REMOTE_ROOT = "https://rome.baulab.info/data/dsets"
REMOTE_DATASETS: dict[str, str] = {
    "counterfact": f"{REMOTE_ROOT}/counterfact.json",
    "mcf": f"{REMOTE_ROOT}/multi_counterfact.json",
    "zsre": f"{REMOTE_ROOT}/zsre_mend_eval.json",
}
"""Dataset names accepted instead of a path, and where they are downloaded from."""



class DataError(ValueError):
    """A data file or record that cannot be evaluated; the message names record and field."""

    def __init__(
        self,
        message: str,
        index: int | None = None,
        record_id: Any = None,
        field_name: str | None = None,
    ):
        where = ""
        if index is not None:
            where = f"record {index}" + (f" (id {record_id!r})" if record_id is not None else "")
            where += f", field {field_name!r}: " if field_name else ": "
        super().__init__(where + message)
        self.index = index
        self.record_id = record_id
        self.field = field_name


@dataclass(frozen=True)
class Record:
    """One evaluation case: the edit it asks for, plus what only evaluation needs.

    ``neighborhood_answers`` is zsRE's answer for each neighborhood question (empty for
    CounterFact, whose neighborhood prompts are scored against ``target_true``).
    """

    id: int | str
    request: EditRequest
    neighborhood_answers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_zsre(self) -> bool:
        return bool(self.neighborhood_answers) or not self.request.target_true


def load_records(
    source: str | os.PathLike[str],
    limit: int | None = None,
    download_dir: str | os.PathLike[str] | None = None,
) -> list[Record]:
    """Records from a JSON file, or from a dataset name in :data:`REMOTE_DATASETS`.

    A name is looked up in ``download_dir`` (default: the model cache's ``data`` folder)
    and downloaded there once when missing. ``limit`` keeps the first ``limit`` records;
    every record is still validated, so a bad file is caught however small ``limit`` is.
    """
    path = Path(source).expanduser()
    if not path.exists():
        name = str(source).lower()
        if name not in REMOTE_DATASETS:
            known = ", ".join(sorted(REMOTE_DATASETS))
            raise DataError(f"{source} is neither a file nor a known dataset name ({known})")
        path = download(name, download_dir)
    records = parse_records(read_json(path))
    if limit is not None:
        if limit < 1:
            raise DataError(f"the number of records must be at least 1, got {limit}")
        records = records[:limit]
    return records


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


def download(name: str, download_dir: str | os.PathLike[str] | None = None) -> Path:
    """Fetch a public dataset file once (atomic rename, so no half file is ever cached)."""
    url = REMOTE_DATASETS[name]
    if download_dir is None:
        from models.load import cache_dir

        download_dir = cache_dir() / "data"
    dest = Path(download_dir) / url.rsplit("/", 1)[1]
    if dest.exists():
        return dest
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_file(dest) as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"cannot download {name} from {url}: {exc}. Pass a local file with --data instead."
        ) from exc
    return dest


# -- parsing and validation ------------------------------------------------------------------


def parse_records(raw: Any) -> list[Record]:
    """Validate a decoded JSON list (ours, ROME CounterFact or MEND zsRE layout) into records."""
    if not isinstance(raw, list):
        raise DataError(f"a data file must hold a JSON list of records, got {type(raw).__name__}")
    if not raw:
        raise DataError("the data file holds no records")
    return [parse_record(item, index) for index, item in enumerate(raw)]


def parse_record(item: Any, index: int) -> Record:
    """One record in any supported layout; :class:`DataError` names index, id and field."""
    if not isinstance(item, Mapping):
        raise DataError(f"must be a JSON object, got {type(item).__name__}", index)
    if "requested_rewrite" in item:
        item = _from_rome_counterfact(item, index)
    elif "src" in item and "loc" in item:
        item = _from_mend_zsre(item, index)
    return _parse_flat(item, index)


def _parse_flat(item: Mapping[str, Any], index: int) -> Record:
    record_id = item.get("id", index)
    if isinstance(record_id, bool) or not isinstance(record_id, int | str):
        raise DataError("must be an integer or a string", index, None, "id")

    def fail(message: str, name: str) -> DataError:
        return DataError(message, index, record_id, name)

    def text(name: str, required: bool = True) -> str:
        if name not in item or item[name] is None:
            if required:
                raise fail("is missing", name)
            return ""
        value = item[name]
        if not isinstance(value, str):
            raise fail(f"must be a string, got {type(value).__name__}", name)
        return value

    def texts(name: str) -> tuple[str, ...]:
        value = item.get(name, [])
        if value is None:
            return ()
        if not isinstance(value, list):
            raise fail(f"must be a list of strings, got {type(value).__name__}", name)
        for i, entry in enumerate(value):
            if not isinstance(entry, str) or not entry.strip():
                raise fail(f"entry {i} must be a non-empty string, got {entry!r}", name)
        return tuple(value)

    request = EditRequest(
        subject=text("subject"),
        prompt=text("prompt"),
        target_new=text("target_new"),
        target_true=text("target_true", required=False) or None,
        paraphrase_prompts=texts("paraphrase_prompts"),
        neighborhood_prompts=texts("neighborhood_prompts"),
        question=text("question", required=False) or None,
    )
    try:
        request.validate()
    except InvalidEditRequest as exc:
        raise fail(str(exc), exc.field or "?") from exc
    answers = texts("neighborhood_prompts_answers")
    if answers and len(answers) != len(request.neighborhood_prompts):
        raise fail(
            f"has {len(answers)} answers for "
            f"{len(request.neighborhood_prompts)} neighborhood prompts",
            "neighborhood_prompts_answers",
        )
    return Record(id=record_id, request=request, neighborhood_answers=answers)


def _from_rome_counterfact(item: Mapping[str, Any], index: int) -> dict[str, Any]:
    """ROME/MEMIT ``counterfact.json`` layout -> ours (targets are ``{"str": ...}`` objects)."""
    record_id = item.get("case_id", index)
    rewrite = item["requested_rewrite"]
    if not isinstance(rewrite, Mapping):
        raise DataError("must be an object", index, record_id, "requested_rewrite")

    def target(name: str) -> Any:
        value = rewrite.get(name)
        if isinstance(value, Mapping):
            if "str" not in value:
                raise DataError("has no 'str'", index, record_id, f"requested_rewrite.{name}")
            return value["str"]
        return value

    return {
        "id": record_id,
        "subject": rewrite.get("subject"),
        "prompt": rewrite.get("prompt"),
        "target_new": target("target_new"),
        "target_true": target("target_true"),
        "paraphrase_prompts": item.get("paraphrase_prompts", []),
        "neighborhood_prompts": item.get("neighborhood_prompts", []),
    }


def _from_mend_zsre(item: Mapping[str, Any], index: int) -> dict[str, Any]:
    """MEND ``zsre_mend_eval.json`` layout -> ours (as MEMIT's ``MENDQADataset`` reads it)."""
    src, subject, loc = item.get("src"), item.get("subject"), item.get("loc")
    for name, value in (("src", src), ("subject", subject), ("loc", loc)):
        if not isinstance(value, str) or not value:
            raise DataError("must be a non-empty string", index, index, name)
    if subject not in src:
        raise DataError(f"does not contain the subject {subject!r}", index, index, "src")
    answers = item.get("answers")
    if not isinstance(answers, list) or not answers:
        raise DataError("must be a non-empty list", index, index, "answers")
    rephrase = item.get("rephrase")
    loc = loc if loc.endswith("?") else loc + "?"
    return {
        "id": index,
        "subject": subject,
        "prompt": src.replace(subject, "{}", 1),
        "target_new": answers[0],
        "target_true": "",
        "paraphrase_prompts": [rephrase] if rephrase else [],
        "neighborhood_prompts": [loc],
        "neighborhood_prompts_answers": [item.get("loc_ans")],
    }


def requests_of(records: Sequence[Record | EditRequest]) -> list[EditRequest]:
    """The edit requests of records (what ``Editor.edit`` takes)."""
    return [r.request if isinstance(r, Record) else r for r in records]


def detect_dataset(records: Sequence[Record | EditRequest]) -> str:
    """``"zsre"`` when records carry neighborhood answers and no ``target_true``, else
    ``"counterfact"`` (the metrics differ: zsRE has no true target to compare against)."""
    cases = [r for r in records if isinstance(r, Record)]
    if cases and all(c.is_zsre for c in cases):
        return "zsre"
    return "counterfact"
