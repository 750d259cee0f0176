"""The ``/v1`` routes: auth, one call to the backend chosen at start-up, the answer.

The backend (:class:`app.api.openai.backend.OpenAIBackend`: the embedded engine or vLLM) is
on ``app.state.openai``; no route asks which. Answers are validated against the declared
``openai`` types and sent as set; each names its engine (``X-Modeledit-Engine``) and, when it
generated, its version (``X-Modeledit-Version``, as its ``model`` does). Streams go out as
server-sent events (:mod:`app.api.openai.sse`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Response
from fastapi import Request as HttpRequest

from app.api.errors import public
from app.api.openai import errors
from app.api.openai.backend import VERSION_HEADER, OpenAIBackend, Stream
from app.api.openai.protocol import (
    ENGINE_HEADER,
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from app.api.openai.sse import event_stream
from app.api.security import require_read

router = APIRouter(prefix="/v1", tags=["openai"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad values, unknown fields, over-long prompt"},
    401: {"model": ErrorResponse, "description": "a read token is configured and none was sent"},
    403: {"model": ErrorResponse, "description": "the token is not valid for reading"},
    404: {"model": ErrorResponse, "description": "unknown model (version)"},
    429: {"model": ErrorResponse, "description": "the request queue is full; see Retry-After"},
    503: {"model": ErrorResponse, "description": "the service is stopping; see Retry-After"},
    504: {"model": ErrorResponse, "description": "no answer within MODELEDIT_QUERY_TIMEOUT_S"},
}
ANSWERS = {"responses": RESPONSES, "response_model_exclude_unset": True}


def backend(http: HttpRequest) -> OpenAIBackend:
    return http.app.state.openai


async def _answer(http: HttpRequest, response: Response, answer: Any) -> Any:
    """A whole answer (FastAPI validates it against the route's model), or the stream."""
    engine = backend(http).engine
    if isinstance(answer, Stream):
        settings = http.app.state.services.settings
        try:
            return event_stream(answer, {ENGINE_HEADER: engine, VERSION_HEADER: answer.version},
                                settings.sse_ping_s, settings.drain_grace_s,
                                lambda text: public(http, text))
        except BaseException:  # the generation is running: it must not outlive a failed reply
            await answer.close()
            raise
    response.headers[ENGINE_HEADER] = engine
    response.headers[VERSION_HEADER] = answer.model
    return answer


@router.get("/models", response_model=ModelList, **ANSWERS,
            summary="Every committed version as a model, plus `active` and the base's name")
async def list_models(http: HttpRequest, response: Response,
                      _who: str = Depends(require_read)) -> ModelList:
    response.headers[ENGINE_HEADER] = backend(http).engine
    return await backend(http).list_models()


@router.get("/models/{model_id:path}", response_model=ModelCard, **ANSWERS,
            summary="One model (version or alias)")
async def get_model(http: HttpRequest, response: Response,
                    model_id: str = Path(examples=["active"], description="a version or alias"),
                    _who: str = Depends(require_read)) -> ModelCard:
    response.headers[ENGINE_HEADER] = backend(http).engine
    return await backend(http).get_model(model_id)


@router.post("/completions", response_model=CompletionResponse, **ANSWERS,
             summary="Continue a prompt (text or token ids) on any version")
async def completions(body: CompletionRequest, http: HttpRequest, response: Response,
                      _who: str = Depends(require_read)) -> Any:
    return await _answer(http, response, await backend(http).create_completion(body, http))


@router.post("/chat/completions", response_model=ChatResponse, **ANSWERS,
             summary="Answer a conversation (the model's own chat template) on any version")
async def chat_completions(body: ChatRequest, http: HttpRequest, response: Response,
                           _who: str = Depends(require_read)) -> Any:
    return await _answer(http, response,
                         await backend(http).create_chat_completion(body, http))


def install(app: FastAPI) -> None:
    """Mount the /v1 routes and their OpenAI-shaped errors."""
    app.include_router(router)
    errors.install(app)
