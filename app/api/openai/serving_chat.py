"""``POST /v1/chat/completions`` on the embedded engine (vLLM's ``OpenAIServingChat``): the
conversation through the model's own chat template, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request as HttpRequest
from openai.types.chat import ChatCompletionChunk

from app.api.openai import logprobs as lp
from app.api.openai import serving as sv
from app.api.openai.backend import Stream, StreamError
from app.api.openai.protocol import ChatRequest, ChatResponse
from app.api.openai.serving_models import ServingModels
from app.services import Services


class ServingChat:
    """Answers a conversation on one version."""

    def __init__(self, services: Services, models: ServingModels) -> None:
        self.services = services
        self.models = models

    async def create(self, body: ChatRequest, http: HttpRequest) -> ChatResponse | Stream:
        services = self.services
        engine = sv.engine_of(services.parts)
        sv.refuse_extra(body)
        prompt = await sv.chat_prompt(services.parts, body)
        max_tokens = sv.budget(sv.model_context(services.parts),
                               services.settings.max_tokens_cap, [prompt], body.limit(),
                               body.limit_param(), "messages")
        version = self.models.resolve(body.model)
        top = (body.top_logprobs or 0) if body.logprobs else None
        call = sv.submit(engine, version, [prompt], body.n,
                         lambda j: sv.params(body, max_tokens, top, False, j))
        if body.stream:
            return self._stream(body, call, prompt)
        await sv.wait_all(call, http)
        tokenizer = services.parts.lm.tokenizer
        choices = []
        for i, r in enumerate(call.requests):
            logprobs = None
            if body.logprobs:
                logprobs = {"content": lp.chat_content(tokenizer, r.output_ids,
                                                       r.token_logprobs, r.top_logprobs)}
            choices.append({"index": i, "message": {"role": "assistant", "content": r.text},
                            "finish_reason": sv.finish(r.finish_reason), "logprobs": logprobs})
        return ChatResponse(id=sv.new_id("chatcmpl"), object="chat.completion",
                            created=sv.now(), model=version, choices=choices,
                            usage=sv.usage(call, [prompt]))

    def _stream(self, body: ChatRequest, call: sv.Call, prompt: list[int]) -> Stream:
        rid, created = sv.new_id("chatcmpl"), sv.now()
        cursor = lp.StreamCursor(self.services.parts.lm.tokenizer, call.requests)
        timeout_s = self.services.settings.query_timeout_s

        def chunk(choices: list[dict[str, object]], **usage: object) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=rid, object="chat.completion.chunk", created=created,
                                       model=call.version, choices=choices, **usage)

        async def chunks() -> AsyncIterator[ChatCompletionChunk | StreamError]:
            for i in range(len(call.requests)):  # the role first, as OpenAI sends it
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None, "logprobs": None}])
            async for d in sv.deltas(call, timeout_s):
                if isinstance(d, StreamError):
                    yield d
                    return
                yield chunk([{"index": d.index,
                              "delta": {"content": d.text} if d.text else {},
                              "finish_reason": d.finish_reason,
                              "logprobs": cursor.chat(d.index) if body.logprobs else None}])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage=sv.usage(call, [prompt]))

        async def close() -> None:
            call.cancel()

        return Stream(call.version, chunks(), close)
