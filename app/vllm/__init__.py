"""vLLM as the data plane: the service stays the control plane (facts, versions, gate).

* :mod:`app.vllm.client`: the few vLLM HTTP calls the service makes (models, LoRA load/unload);
* :mod:`app.vllm.adapters`: exports each committed version as a PEFT adapter and keeps vLLM's
  loaded set equal to what should serve (catching up after vLLM was down);
* :mod:`app.vllm.proxy`: forwards OpenAI requests to vLLM with ``model`` resolved, and its
  answers back with ``model`` the version that answered;
* :mod:`app.vllm.backend`: vLLM as a ``/v1`` backend (:mod:`app.api.openai.backend`), with
  the embedded engine's checks, answer types and model cards;
* :mod:`app.vllm.process`: starts vLLM's CPU build the way it runs here, restarts a dead engine;
* :mod:`app.vllm.launch`: ``make serve-vllm`` (vLLM + the service, both on loopback).

Nothing here imports vLLM: it lives in its own virtual environment (``make vllm-env``).
"""
