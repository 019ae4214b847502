"""`olmo2 eval --backend vllm` against olmo2's own engine on one olmo2-written checkpoint: a
log-likelihood task (log-likelihoods through vLLM's prompt log-probs) and a generative task
(greedy) give the same scores, and the same per-request log-likelihoods to 1e-4 (fp32, two
engines summing the same log-softmax in other orders)."""

from __future__ import annotations

import json

import pytest

from olmo2.cli import main
from tests.vllm.conftest import require_vllm

pytestmark = pytest.mark.vllm

TASKS = "arc_easy:rc::olmes,naturalqs::olmes"


def _eval(tiny, data_dir, tmp_path, backend: str) -> dict:
    out = tmp_path / f"{backend}.json"
    args = ["eval", "--model", str(tiny.path), "--tasks", TASKS, "--limit", "6", "--truncate",
            "--data-dir", str(data_dir), "--backend", backend, "--output", str(out),
            "--dump-requests", str(tmp_path / f"{backend}-requests.jsonl")]  # fmt: skip
    assert main(args) == 0
    return json.loads(out.read_text())


def test_vllm_backend_scores_equal_olmo2(tiny, data_dir, tmp_path):
    require_vllm()
    ours = _eval(tiny, data_dir, tmp_path, "olmo2")
    theirs = _eval(tiny, data_dir, tmp_path, "vllm")
    for key, res in ours["tasks"].items():
        assert theirs["tasks"][key]["metrics"] == pytest.approx(res["metrics"], abs=1e-6), key
    assert theirs["model"]["backend"] == "vllm"


def test_vllm_loglikelihoods_equal_olmo2(tiny):
    require_vllm()
    from olmo2.eval.backend_harness import BackendHarness, files_fingerprint
    from olmo2.eval.harness import Harness
    from olmo2.infer.backends import load_backend
    from tests.vllm.conftest import engine_options

    pairs = [("the quick brown", " fox"), ("the quick brown", " dog jumps"), ("", "over the")]
    ours = Harness(tiny.model, tiny.tok, progress=False).loglikelihood(pairs)
    with load_backend("vllm", tiny.path, **engine_options()) as backend:
        h = BackendHarness(
            backend, tiny.tok, tiny.model.config, files_fingerprint(tiny.path), progress=False
        )
        theirs = h.loglikelihood(pairs)
    for a, b in zip(ours, theirs, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert (b.is_greedy, b.num_tokens) == (a.is_greedy, a.num_tokens)


def test_missing_vllm_is_a_clear_error(tiny, capsys, monkeypatch):
    """Without vLLM (import blocked here), `--backend vllm` exits 2 naming the extra."""
    import builtins

    real = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    rc = main(
        ["eval", "--model", str(tiny.path), "--tasks", "arc_easy:rc::olmes", "--backend", "vllm"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "olmo2[vllm]" in err and "Traceback" not in err
