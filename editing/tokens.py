"""Moved to :mod:`editing.forward.tokens`; this old path re-exports it for one release."""

from editing.forward.tokens import continuation_ids, fact_token_index, prompt_ids, subject_span

__all__ = ["continuation_ids", "fact_token_index", "prompt_ids", "subject_span"]
