"""Keep vLLM's loaded adapters equal to the versions that should serve, whatever happens.

A commit never waits on vLLM: the worker commits to SQLite as always, and this loop (a thread
in the API process) notices the new version within ``poll_s``, exports its exact PEFT adapter
with :func:`app.serving.export.export_peft_version` and loads it with ``/v1/load_lora_adapter``. The
loop is level-triggered, not event-driven: every step compares what vLLM lists with what should
be loaded, so after vLLM was down (or restarted, losing its runtime adapters) the next step
loads everything again without any replay log.

Adapter names are ``<version>-<12 hex of the weights digest>``: a stale adapter loaded from an
earlier data directory never answers for a new ``v3``, and any adapter of that shape that is
not wanted is unloaded. At most ``max_adapters`` are kept (least recently used out, the
active version always in); an evicted version is loaded again on first use (:meth:`ensure`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.vllm.client import VllmClient, VllmRefused, VllmUnavailable

if TYPE_CHECKING:
    from app.serving.parts import ModelParts
    from app.store import Version

log = logging.getLogger(__name__)

ENGINE = "vllm"
_OURS = re.compile(r"^.+-[0-9a-f]{12}$")


class NotServable(RuntimeError):
    """A version vLLM cannot serve as asked; the message says what to do."""


@dataclass
class Serving:
    """Whether vLLM serves one version: ``pending`` (not yet, or vLLM is down), ``served``,
    ``unloaded`` (evicted or failed: loaded again on first use if usable) or ``refused``."""

    model: str | None
    state: str = "pending"
    error: str | None = None

    def out(self) -> dict[str, Any]:
        return {"engine": ENGINE, "model": self.model, "state": self.state, "error": self.error}


def digest_of(version: Version, chain: list[Version]) -> str:
    """The version's recorded weights digest, else one of its chain's delta files (both change
    whenever the weights do)."""
    recorded = (version.diagnostics or {}).get("weights_sha256")
    if recorded:
        return str(recorded)
    return hashlib.sha256("|".join(v.file_sha256 or "" for v in chain).encode()).hexdigest()


class AdapterSync:
    """Exports and loads committed versions into vLLM; reports each version's serving state."""

    def __init__(self, parts: ModelParts, client: VllmClient, adapter_dir: Path, *,
                 max_adapters: int = 8, max_rank: int = 64, poll_s: float = 0.5) -> None:
        self.parts = parts
        self.client = client
        self.adapter_dir = Path(adapter_dir)
        self.max_adapters = max_adapters
        self.max_rank = max_rank
        self.poll_s = poll_s
        self.up = False
        self.answered = False
        """vLLM has answered a completion since it came up: what /ready waits for (its model
        list answers some seconds before it can generate)."""
        self.base_name: str | None = None
        self.context: int | None = None
        """vLLM's context length for the base model (its ``max_model_len``), once listed."""
        self.last_error: str | None = None
        self._base: str | None = None
        self._names: dict[str, str] = {}
        self._states: dict[str, Serving] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._loaded: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-sync", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> AdapterSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        self.client.close()

    def kick(self) -> None:
        """Sync now (e.g. on a commit event) instead of at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                if self.up and not self.answered and self.base_name:
                    self.answered = self.client.answers(self.base_name)
            except Exception:  # the loop must outlive any one bad step
                log.exception("vLLM sync step failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # -- what serves ------------------------------------------------------------------------
    def name_of(self, version: str) -> str:
        """The adapter name of a committed version (the base model's name for the base)."""
        with self._lock:
            if version not in self._names:
                store = self.parts.store
                record = store.get_version(version)
                if record.is_base:
                    return self.base_name or record.model_name or version
                self._names[version] = (
                    f"{version}-{digest_of(record, store.chain(version))[:12]}")
            return self._names[version]

    def version_of(self, name: str) -> str | None:
        """The version an adapter name (or the base model's name) stands for, None for a
        name this sync never gave: how an answer vLLM names by adapter gets its version."""
        with self._lock:
            if name == self.base_name:
                return self._base_id()
            return next((v for v, n in self._names.items() if n == name), None)

    def state_of(self, version: str | None) -> dict[str, Any] | None:
        """``{"engine", "model", "state", "error"}`` for the API's job and version views."""
        if version is None:
            return None
        with self._lock:
            if version == self._base_id():
                return Serving(self.base_name, "served" if self.up else "pending").out()
            serving = self._states.get(version)
            return (serving or Serving(None)).out()

    def served_names(self) -> set[str]:
        """The adapter names vLLM listed at the last step."""
        with self._lock:
            return set(self._loaded)

    def _base_id(self) -> str:
        if self._base is None:
            self._base = self.parts.store.list_versions()[0].id
        return self._base

    # -- one step ---------------------------------------------------------------------------
    def step(self) -> None:
        """Compare vLLM's adapters with the wanted set; load and unload the difference."""
        try:
            served = self.client.models()
        except (VllmUnavailable, VllmRefused) as exc:
            self._down(str(exc))
            return
        with self._lock:
            if not self.up:
                log.info("vLLM is up at %s; catching up", self.client.url)
                for serving in self._states.values():  # it may run with a larger rank now
                    if serving.state == "refused":
                        serving.state, serving.error = "pending", None
            self.up, self.last_error = True, None
            base = next((m for m in served if m.parent is None), None)
            if base is not None:
                self.base_name, self.context = base.id, base.max_model_len or self.context
            self._loaded = {m.id for m in served if m.parent is not None}
            wanted = self._wanted()
            keep = set(wanted.values())
            for name in sorted(self._loaded - keep):
                if _OURS.match(name):
                    self._unload(name)
            for version, name in wanted.items():
                if name in self._loaded:
                    self._set(version, name, "served")
                elif self._states.get(version, Serving(None)).state != "refused":
                    self._load(version, name)

    def _wanted(self) -> dict[str, str]:
        """Usable versions, newest use last, bounded by ``max_adapters`` (the active one in)."""
        store = self.parts.store
        usable = [v for v in store.list_versions() if not v.is_base and v.state == "committed"]
        ids = {v.id for v in usable}
        for version in list(self._lru):
            if version not in ids:
                del self._lru[version]
                self._set(version, self._names.get(version), "unloaded")
        for record in usable:
            if record.id not in self._lru:
                self._lru[record.id] = None  # first seen: the newest
        active = store.active_version()
        if active in self._lru:
            self._lru.move_to_end(active)
        kept = list(self._lru)[-self.max_adapters:]
        for version in self._lru:
            if version not in kept and self._states.get(version, Serving(None)).state == "served":
                self._set(version, self._names.get(version), "unloaded")
        return {version: self.name_of(version) for version in kept}

    def ensure(self, version: str) -> str:
        """The adapter name of ``version``, loaded now if it was evicted (first use).
        :class:`NotServable` for a version vLLM refuses, :class:`VllmUnavailable` if down."""
        with self._lock:
            name = self.name_of(version)
            if version == self._base_id():
                return name
            self._lru[version] = None
            self._lru.move_to_end(version)
            if name not in self._loaded:
                self._load(version, name, raise_errors=True)
            return name

    # -- load / unload ----------------------------------------------------------------------
    def _load(self, version: str, name: str, raise_errors: bool = False) -> None:
        from app.serving.delta_source import UnusableDelta
        from app.serving.export import export_peft_version
        from editing import PeftExportError

        try:
            path = export_peft_version(self.parts, version, self.adapter_dir / name)
            rank = int(json.loads((path / "modeledit_version.json").read_text())["r"])
            if rank > self.max_rank:
                raise NotServable(
                    f"{version} needs LoRA rank {rank}, above vLLM's --max-lora-rank "
                    f"{self.max_rank}: restart vLLM with VLLM_MAX_LORA_RANK={rank} (make "
                    f"serve-vllm VLLM_MAX_LORA_RANK={rank}, up to 512), or query {version} "
                    "through the service's own /generate")
            self.client.load_adapter(name, str(path))
        except VllmUnavailable as exc:
            self._set(version, name, "pending", str(exc))
            if raise_errors:
                raise
            return
        except (NotServable, VllmRefused, PeftExportError, UnusableDelta, FileExistsError) as exc:
            log.error("vLLM cannot serve %s: %s", version, exc)
            self._set(version, name, "refused", str(exc))
            if raise_errors:
                raise NotServable(str(exc)) from exc
            return
        self._loaded.add(name)
        self._set(version, name, "served")
        log.info("vLLM serves %s as %s", version, name)

    def _unload(self, name: str) -> None:
        try:
            self.client.unload_adapter(name)
        except (VllmUnavailable, VllmRefused) as exc:
            log.warning("could not unload %s from vLLM: %s", name, exc)
            return
        self._loaded.discard(name)
        log.info("unloaded %s from vLLM", name)

    def _set(self, version: str, name: str | None, state: str, error: str | None = None) -> None:
        self._states[version] = Serving(name, state, error)

    def _down(self, reason: str) -> None:
        with self._lock:
            if self.up:
                log.warning("vLLM is down (%s); versions stay committed, serving resumes "
                            "when it is back", reason)
            self.up, self.answered, self.last_error, self._loaded = False, False, reason, set()
            for serving in self._states.values():
                if serving.state == "served":
                    serving.state = "pending"
