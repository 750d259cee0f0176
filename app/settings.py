"""Service settings, read from the environment (``MODELEDIT_*``, ``REDIS_URL``) and CLI flags.

One typed object is passed to every part of the service (API, worker, CLI) instead of each
module reading ``os.environ``: tests build a ``Settings`` directly and run several isolated
services side by side (own data directory, own Redis key prefix).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.catalog import DEFAULT_MODEL  # plain data: ``serve`` starts without torch
from models.device_map import parse_device_map


class Settings(BaseSettings):
    """Everything an operator may set; every field is ``MODELEDIT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MODELEDIT_", extra="ignore", frozen=True, populate_by_name=True
    )

    # -- where things live --------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="SQLite store, delta files, exports, embedded Redis")
    model: str = Field(DEFAULT_MODEL, description="model to edit: the default, an HF id/path or a .gguf")
    device: str | None = Field(None, description="torch device (default: cuda if present, else cpu)")
    dtype: Literal["float32", "fp32", "bf16", "bfloat16", "fp16", "float16"] | None = Field(
        None,
        description="weights dtype: float32 (default), bf16 or fp16; half precision also runs on "
        "a CPU (slower there than on a GPU). A data directory belongs to one dtype.",
    )
    device_map: str | None = Field(
        None,
        description="shard the model with accelerate (auto, balanced, sequential, or a JSON "
        "map {module: device}) for a model larger than one GPU; device is then ignored",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "MODELEDIT_REDIS_URL"),
        description="Redis to use; when unset or unreachable an embedded server is started",
    )
    redis_prefix: str = Field("modeledit", description="key prefix, so several services share a Redis")

    # -- network ------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # -- who may do what (issue 5) ------------------------------------------------------
    api_token: SecretStr | None = Field(None, description="bearer token for mutating endpoints")
    read_token: SecretStr | None = Field(None, description="bearer token for read endpoints")
    rate_limit: int = Field(120, ge=0, description="mutating requests per token per window (0: off)")
    rate_window_s: int = Field(60, ge=1)

    # -- input limits -------------------------------------------------------------------
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_batch: int = Field(256, ge=1, description="facts per edit job")
    max_queue: int = Field(1000, ge=1, description="unfinished jobs before POST /edits answers 429")

    # -- queries (app/serving, the /v1 endpoints) -----------------------------------------
    query_engine: bool = Field(True, description="answer queries in the batch engine (off: "
                               "the previous one-request-at-a-time path on merged weights, "
                               "kept for comparison; the /v1 endpoints then answer 503)")
    max_tokens_cap: int = Field(512, ge=1, description="largest max_tokens a query may ask")
    generate_queue: int = Field(256, ge=1, description="queries waiting or running before "
                                "the API answers 429 with Retry-After")
    generate_max_rows: int = Field(64, ge=1, description="rows in one forward pass")
    generate_window_ms: float = Field(5.0, ge=0, le=1000, description="how long an idle "
                                      "engine waits for a burst to share its first pass "
                                      "(never for a lone client)")
    prefix_tokens: int = Field(4096, ge=0, description="prompt tokens whose keys and values "
                               "the engine keeps, per version, for later prompts that start "
                               "alike (least recently used out first); an answer then equals "
                               "a full prefill's to float rounding, not bit for bit (0: off, "
                               "every prompt computed whole)")

    # -- editing ------------------------------------------------------------------------
    method: str = Field("fe", description="default edit method, a registered one (fe, memit, "
                        "per_layer, one_layer: editing/methods/)")
    hparams: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON object overriding the model preset's hyper-parameters, e.g. "
        '{"layers": [1, 2], "z_steps": 10, "chat": {"name_kl_factor": 4}}' "; a name of an "
        "earlier version (mom2_update_weight, v_lr, v_steps, strategy, flat name_kl_factor, "
        "...) stops start-up with an error naming the field that replaced it",
    )
    shared_data: Path | None = Field(None, description="directory of mcf_dev.json etc. (tests)")

    # -- quality gate (app/worker/gate.py) -------------------------------------------------------
    gate_min_efficacy: float | None = Field(
        None, ge=0.0, le=100.0, allow_inf_nan=False,
        description="percent of a batch's facts that must succeed before it becomes active "
        "(unset: no efficacy check); a batch that misses it is committed but held",
    )
    gate_min_chat_efficacy: float | None = Field(
        None, ge=0.0, le=100.0, allow_inf_nan=False,
        description="percent of a batch's facts with a question that must succeed on it, asked "
        "in the model's chat template (unset: no chat check)",
    )
    gate_max_kl: float | None = Field(
        None, ge=0.0, allow_inf_nan=False,
        description="largest mean KL(parent || new) in nats on the probe prompts before a "
        "batch becomes active (unset: no drift check)",
    )

    # -- behaviour ----------------------------------------------------------------------
    follow_poll_s: float = Field(2.0, gt=0, description="API re-reads the active version this often")
    worker_block_ms: int = Field(1000, ge=10)
    heartbeat_s: float = Field(2.0, gt=0)
    lock_ttl_s: float = Field(
        30.0, ge=1,
        description="editor lock TTL: a killed worker's successor waits at most this long",
    )
    worker_nice: int = Field(
        5, ge=0, le=19,
        description="how much lower the worker's CPU priority is than the API's (added to its "
        "nice value at start): an edit computed in the background yields the cores to queries, "
        "and takes longer while they saturate them; 0: the same priority",
    )
    log_level: str = "info"

    # -- vLLM as the serving engine (app/vllm/, docs/serving.md) -------------------------
    vllm_url: str | None = Field(None, description="a vLLM OpenAI server this service drives "
                                 "(adapters) and proxies /v1/* to; unset: no vLLM")
    vllm_api_key: SecretStr | None = Field(None, description="the --api-key vLLM was started with")
    vllm_adapter_dir: Path | None = Field(
        None, description="where adapters are exported for vLLM to read (default "
        "<data_dir>/vllm_adapters); both processes must see it at the same path")
    vllm_max_adapters: int = Field(8, ge=1, description="adapters kept loaded in vLLM (LRU); "
                                   "others are loaded again on first use")
    vllm_max_lora_rank: int = Field(64, ge=1, description="the --max-lora-rank vLLM runs with")
    vllm_poll_s: float = Field(0.5, gt=0, description="how often vLLM is checked and synced")

    @field_validator("hparams", mode="before")
    @classmethod
    def _parse_hparams(cls, value: Any) -> Any:
        """Accept a JSON string from the environment or the CLI; an unknown name, or one of an
        earlier version (``mom2_update_weight``), fails at start naming the field to use."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if isinstance(value, dict) and value:
            from editing.hparams import (
                EditHparams,  # loads torch: only when there is something to check
            )

            EditHparams(layers=(0,)).with_overrides({k: v for k, v in value.items() if k != "layers"})
        return value

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        """A bad ``MODELEDIT_METHOD`` fails at start, naming the registered methods."""
        from editing.methods import get_method  # the registry loads torch: only when checked

        get_method(value)
        return value

    @field_validator("device_map")
    @classmethod
    def _check_device_map(cls, value: str | None) -> str | None:
        """A JSON map must parse now, not when the model loads."""
        parse_device_map(value)
        return value

    @field_validator("gate_min_efficacy", "gate_min_chat_efficacy", "gate_max_kl", "api_token",
                     "read_token", "vllm_url", "vllm_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """An empty setting is an unset one: ``MODELEDIT_GATE_MAX_KL=`` turns the check off
        rather than failing, ``MODELEDIT_API_TOKEN=`` means no token, not a token equal to ''."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @cached_property
    def data_path(self) -> Path:
        """The data directory, absolute (child processes may run elsewhere)."""
        return self.data_dir.expanduser().resolve()

    def child_env(self) -> dict[str, str]:
        """Environment for a child process so it sees exactly these settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None or name == "redis_url":
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict):
                value = json.dumps(value)
            env[f"MODELEDIT_{name.upper()}"] = str(value)
        env["MODELEDIT_DATA_DIR"] = str(self.data_path)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def exposed_without_token(self) -> bool:
        """Bound beyond loopback with nobody needing a token to edit: worth a loud warning."""
        loopback = {"127.0.0.1", "localhost", "::1"}
        return self.host not in loopback and self.api_token is None
