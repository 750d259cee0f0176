"""Old name of :mod:`editing.forward.logprob`, kept for one release: import from there instead."""

from editing.forward.logprob import continuation_logprobs, target_logprob, target_logprobs

__all__ = ["continuation_logprobs", "target_logprob", "target_logprobs"]
