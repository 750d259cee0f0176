"""What an API process holds when ``MODELEDIT_VLLM_URL`` is set: the adapter sync and the proxy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.vllm.adapters import AdapterSync
from app.vllm.client import VllmClient
from app.vllm.proxy import VllmProxy

if TYPE_CHECKING:
    from app.serving.parts import ModelParts
    from app.settings import Settings


@dataclass
class VllmServing:
    sync: AdapterSync
    proxy: VllmProxy

    def close(self) -> None:
        """Stop the sync thread. The proxy's async client belongs to the server's event loop,
        which is closing: its sockets close with the process."""
        self.sync.stop()


def build_vllm(settings: Settings, parts: ModelParts) -> VllmServing | None:
    """The sync thread (started) and the proxy, or None when no vLLM is configured."""
    if not settings.vllm_url:
        return None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per poll
    key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    adapter_dir = settings.vllm_adapter_dir or settings.data_path / "vllm_adapters"
    sync = AdapterSync(parts, VllmClient(settings.vllm_url, key), adapter_dir.resolve(),
                       max_adapters=settings.vllm_max_adapters,
                       max_rank=settings.vllm_max_lora_rank, poll_s=settings.vllm_poll_s)
    proxy = VllmProxy(settings.vllm_url, key, sync, parts.store)
    return VllmServing(sync.start(), proxy)
