"""``POST /v1/completions`` on the embedded engine (vLLM's ``OpenAIServingCompletion``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request as HttpRequest

from app.api.openai import logprobs as lp
from app.api.openai import serving as sv
from app.api.openai.backend import Stream, StreamError
from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import CompletionChoice, CompletionRequest, CompletionResponse
from app.api.openai.serving_models import ServingModels
from app.services import Services


class ServingCompletion:
    """Continues prompts (text or token ids) on one version, whole or streamed."""

    def __init__(self, services: Services, models: ServingModels) -> None:
        self.services = services
        self.models = models

    async def create(self, body: CompletionRequest,
                     http: HttpRequest) -> CompletionResponse | Stream:
        services = self.services
        engine = sv.engine_of(services.parts)
        sv.refuse_extra(body)
        if body.stream and body.echo:
            raise OpenAIError(400, "echo is not supported with stream: true", "echo",
                              "unsupported")
        prompts = await sv.prompts_of(services.parts, body)
        for p in prompts:
            sv.check_ids(services.parts, p, "prompt")
        max_tokens = sv.budget(sv.model_context(services.parts),
                               services.settings.max_tokens_cap, prompts, body.max_tokens,
                               "max_tokens", "prompt")
        version = self.models.resolve(body.model)
        call = sv.submit(engine, version, prompts, body.n,
                         lambda j: sv.params(body, max_tokens, body.logprobs, body.echo, j))
        if body.stream:
            return self._stream(body, call, prompts)
        await sv.wait_all(call, http)
        return self._answer(body, call, prompts)

    def _answer(self, body: CompletionRequest, call: sv.Call,
                prompts: list[list[int]]) -> CompletionResponse:
        tokenizer = self.services.parts.lm.tokenizer
        choices = []
        for i, r in enumerate(call.requests):
            prompt = prompts[call.prompt_index[i]]
            head = ""
            if body.echo:
                given = body.prompt if isinstance(body.prompt, str) else (
                    body.prompt[call.prompt_index[i]] if isinstance(body.prompt[0], str)
                    else None)
                head = given if isinstance(given, str) else tokenizer.decode(prompt)
            logprobs = None
            if body.logprobs is not None:
                ids = (prompt if body.echo else []) + r.output_ids
                lps = (r.prompt_logprobs if body.echo else []) + r.token_logprobs
                tops = (r.prompt_top_logprobs if body.echo else []) + r.top_logprobs
                logprobs = lp.completion_lists(tokenizer, ids, lps, tops)
            choices.append(CompletionChoice(index=i, text=head + r.text,
                                            finish_reason=sv.finish(r.finish_reason),
                                            logprobs=logprobs))
        return CompletionResponse(id=sv.new_id("cmpl"), object="text_completion",
                                  created=sv.now(), model=call.version, choices=choices,
                                  usage=sv.usage(call, prompts))

    def _stream(self, body: CompletionRequest, call: sv.Call,
                prompts: list[list[int]]) -> Stream:
        rid, created = sv.new_id("cmpl"), sv.now()
        cursor = lp.StreamCursor(self.services.parts.lm.tokenizer, call.requests)
        timeout_s = self.services.settings.query_timeout_s

        def chunk(choices: list[CompletionChoice], **usage: object) -> CompletionResponse:
            return CompletionResponse(id=rid, object="text_completion", created=created,
                                      model=call.version, choices=choices, **usage)

        async def chunks() -> AsyncIterator[CompletionResponse | StreamError]:
            async for d in sv.deltas(call, timeout_s):
                if isinstance(d, StreamError):
                    yield d
                    return
                logprobs = cursor.completion(d.index) if body.logprobs is not None else None
                yield chunk([CompletionChoice(index=d.index, text=d.text,
                                              finish_reason=d.finish_reason,
                                              logprobs=logprobs)])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage=sv.usage(call, prompts))

        async def close() -> None:
            call.cancel()

        return Stream(call.version, chunks(), close)
