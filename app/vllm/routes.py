"""``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` forwarded to vLLM.

Mounted only when ``MODELEDIT_VLLM_URL`` is set. The service's own OpenAI endpoints (the
embedded engine) own the request/response models; when both exist, those routes call
:meth:`app.vllm.proxy.VllmProxy.forward` with the request they parsed (as a dict) instead of
this router being mounted (docs/serving.md, section vLLM).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.deps import get_services
from app.security import require_read
from app.vllm.proxy import openai_error

router = APIRouter(prefix="/v1", tags=["openai (vLLM)"])


async def _body(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


@router.get("/models", summary="The versions vLLM serves, 'active' included")
async def models(request: Request, _who: str = Depends(require_read)) -> Response:
    return await get_services(request).vllm.proxy.models()


@router.post("/completions", summary="Text completion by vLLM (model: active, v0, vN)")
async def completions(request: Request, _who: str = Depends(require_read)) -> Response:
    body = await _body(request)
    if body is None:
        return openai_error(400, "the body must be JSON", "invalid_request_error")
    return await get_services(request).vllm.proxy.forward("completions", body)


@router.post("/chat/completions", summary="Chat completion by vLLM (model: active, v0, vN)")
async def chat_completions(request: Request, _who: str = Depends(require_read)) -> Response:
    body = await _body(request)
    if body is None:
        return openai_error(400, "the body must be JSON", "invalid_request_error")
    return await get_services(request).vllm.proxy.forward("chat", body)
