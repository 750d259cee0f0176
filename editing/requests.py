"""What an edit asks for, checked before any compute is spent on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class InvalidEditRequest(ValueError):
    """An edit request that cannot be applied; the message names the request and the field."""

    def __init__(self, message: str, index: int | None = None, field_name: str | None = None):
        where = f"request {index}: " if index is not None else ""
        super().__init__(where + message)
        self.index = index
        self.field = field_name


@dataclass(frozen=True)
class EditRequest:
    """``prompt.format(subject)`` should continue with ``" " + target_new``.

    ``target_true``, paraphrase and neighborhood prompts are optional: they are only used to
    evaluate an edit, never to compute it. ``question`` is the fact asked as a person would
    ask it ("What is the mother tongue of Danielle Darrieux?"), answered by ``target_new``:
    the evaluation asks it in the model's chat template.
    """

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrase_prompts: tuple[str, ...] = field(default_factory=tuple)
    neighborhood_prompts: tuple[str, ...] = field(default_factory=tuple)
    question: str | None = None

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.replace("{}", self.subject)

    def validate(self, index: int | None = None) -> EditRequest:
        """Raise :class:`InvalidEditRequest` if the request cannot be applied; return self."""
        for name in ("subject", "prompt", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidEditRequest(f"{name} must be a string", index, name)
            if not value.strip():
                raise InvalidEditRequest(f"{name} must not be empty or blank", index, name)
        count = self.prompt.count("{}")
        if count != 1:
            raise InvalidEditRequest(
                f"prompt must contain exactly one '{{}}' where the subject goes (found {count})",
                index,
                "prompt",
            )
        if self.question is not None:
            if not isinstance(self.question, str):
                raise InvalidEditRequest("question must be a string", index, "question")
            if not self.question.strip():
                raise InvalidEditRequest(
                    "question must not be blank (leave it out instead)", index, "question"
                )
        return self

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EditRequest:
        """Build from a CounterFact/zsRE-style record (extra keys are ignored)."""
        return cls(
            subject=record["subject"],
            prompt=record["prompt"],
            target_new=record["target_new"],
            target_true=record.get("target_true") or None,
            paraphrase_prompts=tuple(record.get("paraphrase_prompts") or ()),
            neighborhood_prompts=tuple(record.get("neighborhood_prompts") or ()),
            question=record.get("question") or None,
        )


def validate_requests(requests: Iterable[EditRequest]) -> list[EditRequest]:
    """Validate a batch; the error names the first bad request by position."""
    checked = [r.validate(i) for i, r in enumerate(requests)]
    if not checked:
        raise InvalidEditRequest("an edit batch needs at least one request")
    return checked
