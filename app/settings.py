"""Service settings, read from CLI flags, the environment (``MODELEDIT_*``, ``REDIS_URL``), an
env file and a secrets directory, in that order of precedence.

The env file (``MODELEDIT_ENV_FILE``, default ``.env`` in the working directory, read when
present) and the secrets directory (``MODELEDIT_SECRETS_DIR``, default Docker's ``/run/secrets``
when present; one file per setting, named like its variable, e.g. ``modeledit_api_token``) keep
tokens out of the process's command line and out of ``docker inspect``. Every setting except the
secrets is also a flag of ``python -m app`` (:mod:`app.flags` generates them from this class).

One typed object is passed to every part of the service (API, worker, CLI) instead of each
module reading ``os.environ``: tests build a ``Settings`` directly and run several isolated
services side by side (own data directory, own Redis key prefix).
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.catalog import DEFAULT_MODEL  # plain data: ``serve`` starts without torch
from models.device_map import parse_device_map

ENV_FILE_VAR = "MODELEDIT_ENV_FILE"
SECRETS_DIR_VAR = "MODELEDIT_SECRETS_DIR"
DEFAULT_ENV_FILE = ".env"
DEFAULT_SECRETS_DIR = "/run/secrets"
"""Where Docker (and Compose, Swarm, Kubernetes with a volume) mounts secrets."""


class SettingsSourceError(ValueError):
    """An env file or secrets directory that was asked for by name does not exist."""


class Settings(BaseSettings):
    """Everything an operator may set; every field is ``MODELEDIT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MODELEDIT_", extra="ignore", frozen=True, populate_by_name=True
    )
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    """The env file and secrets directory read (absolute, '' for none): children read the same."""

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
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin scope: rollback, revert, exports, any job's "
        "cancel, a gate looser than the operator's (unset: the edit token holds these rights)")
    allow_unauthenticated: bool = Field(
        False, description="start bound beyond loopback with no MODELEDIT_API_TOKEN (anyone who "
        "reaches the port may edit); without it such a start is refused")
    rate_limit: int = Field(120, ge=0, description="mutating requests per token per window (0: off)")
    rate_window_s: int = Field(60, ge=1)

    # -- input limits -------------------------------------------------------------------
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_batch: int = Field(256, ge=1, description="facts per edit job")
    max_queue: int = Field(1000, ge=1, description="unfinished jobs before POST /edits answers 429")
    max_text_tokens: int = Field(256, ge=1, description="tokens (of the model's tokenizer) in "
                                 "any one text of a fact: subject, prompt, target_new, "
                                 "target_true, question, each paraphrase/neighborhood prompt")
    max_fact_tokens: int = Field(4096, ge=1, description="tokens in all the texts of one fact")
    max_batch_tokens: int = Field(131072, ge=1, description="tokens in all the texts of one "
                                  "edit batch (or one evaluation's records)")

    # -- queries (app/serving, the /v1 endpoints) -----------------------------------------
    drain_grace_s: float = Field(10.0, ge=0, le=600, description="on shutdown, how long "
                                 "queries in flight may take to finish before they are "
                                 "answered 503 (new ones are refused at once)")
    query_timeout_s: float = Field(300.0, gt=0, description="deadline of one query (/v1, "
                                   "/score, /generate, /next-tokens): past it the query is "
                                   "cancelled and answered 504")
    max_tokens_cap: int = Field(512, ge=1, description="largest max_tokens a query may ask")
    sse_ping_s: float = Field(15.0, gt=0, le=600, description="a /v1 stream sends a "
                              "keep-alive comment (`: ping`) this often, so proxies keep a "
                              "quiet connection open")
    max_queries_per_caller: int = Field(96, ge=0, description="queries one caller (its read "
                                        "token, or its address when reads are open) may have "
                                        "in flight in one API process before 429 (0: no limit)")
    trusted_proxies: str = Field("", description="comma-separated addresses of reverse proxies "
                                 "whose X-Forwarded-For names the client (none: the peer "
                                 "address is the client)")
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
        "...) stops start-up with an error naming the field that replaced it, a removed switch "
        "(z.stop, z.decay, z.essence_kl) with one saying so",
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
    job_time_limit_s: float = Field(
        7200.0, gt=0, description="seconds one run of a job may take before the worker stops "
        "it (checked at every step of an edit) and fails it; nothing is committed")
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="text: a line per record for a terminal; json: one JSON object "
        "per line (time, level, logger, process, message, exception) for a log collector")

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

    def __init__(self, _env_file: str | Path | None = None, _secrets_dir: str | Path | None = None,
                 **values: Any) -> None:
        """Read the env file and secrets directory named by the arguments, else by
        ``MODELEDIT_ENV_FILE`` / ``MODELEDIT_SECRETS_DIR``, else the defaults when present (an
        empty name turns a source off). A file or directory named but absent is an error, not
        a silently ignored source."""
        env_file = _source(_env_file, ENV_FILE_VAR, DEFAULT_ENV_FILE, dir_=False)
        secrets_dir = _source(_secrets_dir, SECRETS_DIR_VAR, DEFAULT_SECRETS_DIR, dir_=True)
        super().__init__(_env_file=env_file, _secrets_dir=secrets_dir, **values)
        self._sources = {ENV_FILE_VAR: str(env_file.resolve()) if env_file else "",
                         SECRETS_DIR_VAR: str(secrets_dir.resolve()) if secrets_dir else ""}

    @field_validator("hparams", mode="before")
    @classmethod
    def _parse_hparams(cls, value: Any) -> Any:
        """Accept a JSON string from the environment or the CLI; an unknown name, or one of an
        earlier version (``mom2_update_weight``), fails at start naming the field to use."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if isinstance(value, dict) and value:
            from editing import EditHparams  # imported only when there is something to check

            EditHparams(layers=(0,)).with_overrides({k: v for k, v in value.items() if k != "layers"})
        return value

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        """A bad ``MODELEDIT_METHOD`` fails at start, naming the registered methods."""
        from editing import get_method  # the registry loads torch: only when checked

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
        """Environment for a child process so it sees exactly these settings.

        A secret the child reads itself from the same env file or secrets directory is left
        out: a file's token does not become an environment variable of every child process.
        """
        env: dict[str, str] = {}
        read_itself = self._secrets_in_sources()
        for name, value in self.model_dump().items():
            if value is None or name == "redis_url" or name in read_itself:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict):
                value = json.dumps(value)
            env[f"MODELEDIT_{name.upper()}"] = str(value)
        env["MODELEDIT_DATA_DIR"] = str(self.data_path)
        env.update(self._sources)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_admin_is_none(cls, value: Any) -> Any:
        """``MODELEDIT_ADMIN_TOKEN=`` means no admin token (as for the other tokens)."""
        return None if isinstance(value, str) and not value.strip() else value

    def _secrets_in_sources(self) -> set[str]:
        """Secret settings whose value the env file or secrets directory alone gives."""
        secrets = [n for n, v in self.model_dump().items() if isinstance(v, SecretStr)]
        if not secrets or not any(self._sources.values()):
            return set()
        fields: dict[str, Any] = {n: (SecretStr | None, None) for n in secrets}
        reader = create_model("SecretsInFiles", __base__=_FilesOnly, **fields)
        files_only = reader(_env_file=self._sources[ENV_FILE_VAR] or None,
                            _secrets_dir=self._sources[SECRETS_DIR_VAR] or None)
        return {n for n in secrets if getattr(files_only, n) == getattr(self, n)}

    def exposed_without_token(self) -> bool:
        """Bound beyond loopback with nobody needing a token to edit: worth a loud warning."""
        loopback = {"127.0.0.1", "localhost", "::1"}
        return self.host not in loopback and self.api_token is None


class _FilesOnly(BaseSettings):
    """Reads only an env file and a secrets directory (subclassed with the secret fields)."""

    model_config = SettingsConfigDict(env_prefix="MODELEDIT_", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,  # noqa: ANN001, ANN206
                                   dotenv_settings, file_secret_settings):
        return (dotenv_settings, file_secret_settings)


def _source(given: str | Path | None, variable: str, default: str, dir_: bool) -> Path | None:
    """The env file or secrets directory to read, or None (see :meth:`Settings.__init__`)."""
    name = str(given) if given is not None else os.environ.get(variable)
    if name is None:
        path = Path(default)
        return path if (path.is_dir() if dir_ else path.is_file()) else None
    if not name.strip():
        return None
    path = Path(name).expanduser()
    if not (path.is_dir() if dir_ else path.is_file()):
        kind = "directory" if dir_ else "file"
        raise SettingsSourceError(f"{variable} names {path}, which is not an existing {kind}")
    return path
