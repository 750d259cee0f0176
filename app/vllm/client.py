"""The vLLM HTTP calls the service makes itself (the proxy streams user requests separately).

vLLM's runtime LoRA endpoints load any path they are given, so vLLM listens on loopback with
an ``--api-key`` that only this service holds; every call here sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = httpx.Timeout(30.0, connect=2.0)


class VllmUnavailable(RuntimeError):
    """vLLM did not answer (down, starting or its engine died)."""


class VllmRefused(RuntimeError):
    """vLLM answered with an error (e.g. an adapter it cannot load); the message is vLLM's."""


@dataclass(frozen=True)
class ServedModel:
    """One entry of vLLM's ``/v1/models``: the base (``parent`` None) or a LoRA adapter."""

    id: str
    parent: str | None
    root: str | None
    max_model_len: int | None = None
    """The context vLLM serves it with (``--max-model-len``), which may be shorter than the
    model's own: what the budget of a request without ``max_tokens`` must fit."""


class VllmClient:
    """Synchronous client for vLLM's model listing and runtime LoRA management."""

    def __init__(self, url: str, api_key: str | None = None,
                 timeout: httpx.Timeout = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise VllmUnavailable(f"vLLM at {self.url} did not answer ({type(exc).__name__})") \
                from exc
        if response.status_code >= 500:
            raise VllmUnavailable(f"vLLM at {self.url} answered {response.status_code}: "
                                  f"{response.text[:300]}")
        return response

    def healthy(self) -> bool:
        """``/health`` answers 200 (the engine is alive), without raising."""
        try:
            return self._call("GET", "/health").status_code == 200
        except VllmUnavailable:
            return False

    def answers(self, model: str) -> bool:
        """A one-token completion on ``model`` succeeds (the engine can generate), without
        raising."""
        try:
            response = self._call("POST", "/v1/completions", json={
                "model": model, "prompt": "ping", "max_tokens": 1})
        except VllmUnavailable:
            return False
        return response.status_code == 200

    def models(self) -> list[ServedModel]:
        response = self._call("GET", "/v1/models")
        if response.status_code != 200:
            raise VllmRefused(f"GET /v1/models: {response.status_code} {response.text[:300]}")
        return [ServedModel(m["id"], m.get("parent"), m.get("root"), _length(m))
                for m in response.json().get("data", [])]

    def load_adapter(self, name: str, path: str) -> None:
        response = self._call("POST", "/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": path})
        if response.status_code != 200 and "already been loaded" not in response.text:
            raise VllmRefused(f"vLLM refused adapter {name}: {response.text[:500]}")

    def unload_adapter(self, name: str) -> None:
        response = self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code not in (200, 404) and "not found" not in response.text.lower():
            raise VllmRefused(f"vLLM refused to unload {name}: {response.text[:500]}")


def _length(card: dict[str, Any]) -> int | None:
    value = card.get("max_model_len")
    return value if isinstance(value, int) and value > 0 else None
