from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from olmo2.train import checkpoint as ckpt
from olmo2.train.metrics import read_jsonl
from olmo2.train.trainer import LMObjective, split_micro

from .helpers import losses, markov_tokens, train, unigram_entropy, write_tokens


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("tok") / "train.npy", n=20_000)


def test_grad_accumulation_matches_full_batch(tmp_path, data):
    train(tmp_path / "a", data, "data.global_batch_size=8", "data.micro_batch_size=2", steps=4)
    train(tmp_path / "b", data, "data.global_batch_size=8", "data.micro_batch_size=8", steps=4)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == 4
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_units_normalise_whole_batch():
    """A micro-batch split changes nothing: sum over parts of loss_sum / global units equals
    the mean over the whole batch, even with unequal label counts per micro-batch."""
    torch.manual_seed(0)
    from olmo2.model.config import ModelConfig
    from olmo2.model.loss import lm_loss, shift_labels
    from olmo2.model.transformer import Olmo2

    model = Olmo2.build(ModelConfig.debug())
    ids = torch.randint(2, 500, (4, 16))
    labels = shift_labels(ids)
    labels[0, :10] = -100  # unequal counts
    batch = {"input_ids": ids, "labels": labels}
    obj = LMObjective()
    parts = split_micro(batch, 1)
    units = sum(obj.units(p) for p in parts)
    total = sum(obj.loss(model, p)[0] for p in parts) / units
    ref = lm_loss(model(ids), labels).loss
    assert torch.allclose(total, ref, atol=1e-6)


def test_debug_recipe_learns_and_writes_run(tmp_path):
    tokens = markov_tokens(40_000)
    (tmp_path / "d").mkdir()
    tokens.tofile(tmp_path / "d" / "train.npy")
    tokens[:4000].tofile(tmp_path / "val.npy")
    run = tmp_path / "run"
    rc = train(
        run, tmp_path / "d", "optim.lr=1e-2", "schedule.warmup_steps=5", "trainer.eval_interval=20",
        f"data.eval_paths=[{tmp_path / 'val.npy'}]", "checkpoint.save_interval=20", "checkpoint.keep_last=2",
        "logging.report=true", steps=40,
    )  # fmt: skip
    assert rc == 0
    h = unigram_entropy(tokens)
    m = read_jsonl(run / "metrics.jsonl")
    assert [x["step"] for x in m] == list(range(1, 41))
    assert m[0]["loss"] > h  # starts near ln(128)
    final = np.mean([x["ce"] for x in m[-5:]])
    assert final < h - 0.5, (final, h)  # learned the bigram structure beyond unigram statistics
    for key in ("lr", "grad_norm", "tokens_per_s", "mfu", "memory_gb", "eta_s", "z_loss"):
        assert math.isfinite(m[-1][key])
    ev = read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in ev] == [20, 40] and ev[-1]["eval/val/ce"] < h
    names = [p.name for p in ckpt.list_complete(run)]
    assert names == ["stage1-step20-tokens0B", "stage1-step40-tokens0B"]  # keep_last=2
    for f in (
        "config.yaml",
        "report.md",
        "report.html",
        "loss.png",
        "lr.png",
        "grad_norm.png",
        "throughput.png",
    ):
        assert (run / f).is_file(), f
    assert "loss.png" in (run / "report.html").read_text()


def test_stage2_from_stage1(tmp_path, data):
    s1 = tmp_path / "s1"
    train(s1, data, "optim.lr=1e-2", "schedule.warmup_steps=2", "schedule.t_max=20", steps=6)
    c1 = ckpt.latest(s1)
    meta = json.loads((c1 / "olmo2.json").read_text())
    from olmo2.train.config import ScheduleSection
    from olmo2.train.optim import lr_at

    expected_end = lr_at(ScheduleSection(warmup_steps=2, t_max=20), 1e-2, 6, 6)
    assert meta["lr"] == pytest.approx(expected_end)
    s2 = tmp_path / "s2"
    rc = train(
        s2, data, f"model.load_path={c1}", "model.size=null", "schedule.name=linear", "schedule.alpha_f=0",
        "schedule.warmup_steps=0", "schedule.lr_from_checkpoint=true", "trainer.stage=2", "trainer.ingredient=1",
        "data.seed=42", steps=4,
    )  # fmt: skip
    assert rc == 0
    m = read_jsonl(s2 / "metrics.jsonl")
    assert [x["lr"] for x in m] == pytest.approx([expected_end * (1 - s / 4) for s in range(1, 5)])
    assert m[-1]["lr"] == 0.0
    sd = torch.load(ckpt.latest(s2) / "train_state" / "rank0.pt", weights_only=False)
    assert sd["step"] == 4
    assert ckpt.latest(s2).name == "stage2-ingredient1-step4-tokens0B"


def test_stage2_optimizer_moments_restored(tmp_path, data):
    """Stage 2 starts from stage 1's AdamW moments (OLMo 2 did not reset them)."""
    from olmo2.train.cli import build
    from olmo2.train.config import TrainConfig, load_config

    from .helpers import RECIPE, args

    s1, _ = build(load_config(TrainConfig, RECIPE, args(tmp_path / "s1", data, steps=3)[2:]))
    s1.fit()
    c1 = ckpt.latest(tmp_path / "s1")
    extra = [f"model.load_path={c1}", "model.size=null"]
    s2, resumed = build(
        load_config(TrainConfig, RECIPE, args(tmp_path / "s2", data, *extra, steps=2)[2:])
    )
    assert resumed is None and s2.step == 0 and s2.tokens == 0
    names1 = dict(s1.model.named_parameters())
    for name, p in s2.model.named_parameters():
        a, b = s1.optimizer.state[names1[name]], s2.optimizer.state[p]
        assert float(b["step"]) == 3
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )
        assert torch.equal(names1[name].detach(), p.detach())


def test_activation_checkpointing_and_bf16(tmp_path, data):
    train(tmp_path / "ref", data, steps=3)
    train(tmp_path / "ac", data, "trainer.activation_checkpointing=true", steps=3)
    train(tmp_path / "bf16", data, "trainer.precision=bf16", steps=3)
    ref = losses(tmp_path / "ref")
    np.testing.assert_allclose(losses(tmp_path / "ac"), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(losses(tmp_path / "bf16"), ref, rtol=0, atol=2e-2)
    assert losses(tmp_path / "bf16") != ref  # autocast really ran in bf16


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_blocks_train_like_eager(tmp_path, data):
    """trainer.compile=true (every block through torch.compile, the fast CPU path of
    bench/RESULTS.md) follows the eager loss curve."""
    train(tmp_path / "ref", data, steps=3)
    train(tmp_path / "c", data, "trainer.compile=true", steps=3)
    np.testing.assert_allclose(losses(tmp_path / "c"), losses(tmp_path / "ref"), atol=1e-5)


def test_reset_trainer_state_takes_weights_only(tmp_path, data):
    """`model.reset_trainer_state`: start from any HF checkpoint's weights with a fresh
    optimizer, step counter and data position (continued pretraining / fine-tuning)."""
    from olmo2.train.cli import build
    from olmo2.train.config import TrainConfig, load_config

    from .helpers import RECIPE, args

    assert train(tmp_path / "s1", data, steps=3) == 0
    c1 = ckpt.latest(tmp_path / "s1")
    extra = [f"model.load_path={c1}", "model.size=null", "model.reset_trainer_state=true"]
    t, resumed = build(load_config(TrainConfig, RECIPE, args(tmp_path / "s2", data, *extra)[2:]))
    assert resumed is None and t.step == 0 and t.tokens == 0
    assert not t.optimizer.state  # no AdamW moments carried over
    from olmo2.model.hf import read_state_dict

    want = read_state_dict(c1, dtype=torch.float32)
    for name, p in t.model.state_dict().items():
        assert torch.equal(p, want[name]), name
    t.fit()
    assert ckpt.latest(tmp_path / "s2").name.startswith("stage1-step6-")


def test_label_mask_files_drop_masked_targets_from_the_loss(tmp_path, data):
    """`data.label_mask_paths`: positions whose mask is False are not trained on, so the
    loss units per step are exactly the unmasked targets."""
    tokens = np.fromfile(data, dtype=np.uint32)
    mask = np.zeros(len(tokens), dtype=np.bool_)
    mask[::4] = True  # train on one target in four
    mask.tofile(tmp_path / "train.mask.npy")
    run = tmp_path / "run"
    assert train(run, data, f"data.label_mask_paths=[{tmp_path / 'train.mask.npy'}]", steps=3) == 0
    m = read_jsonl(run / "metrics.jsonl")
    full = 8 * 31  # global batch 8 × (seq_len 32 − 1) targets
    assert all(0 < x["units"] < full / 2 for x in m), [x["units"] for x in m]


def test_non_finite_loss_skips_the_update(tmp_path, data):
    """The NaN/inf guard inside `train_step`: the parameters and AdamW state stay untouched
    and the step is recorded as skipped."""
    from olmo2.train.cli import build
    from olmo2.train.config import TrainConfig, load_config

    from .helpers import RECIPE, args

    t, _ = build(load_config(TrainConfig, RECIPE, args(tmp_path / "run", data, steps=3)[2:]))
    batch = next(iter(t.data))
    t.train_step(batch)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    moments = {id(p): s["exp_avg"].clone() for p, s in t.optimizer.state.items()}

    class Poisoned(LMObjective):
        def loss(self, model, mb):
            loss, metrics = super().loss(model, mb)
            return loss * float("nan"), metrics

    t.objective = Poisoned()
    out = t.train_step(batch)
    assert out["skipped"] == "non-finite"
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, s in t.optimizer.state.items():
        assert torch.equal(s["exp_avg"], moments[id(p)])
    assert all(p.grad is None for p in t.model.parameters())


def test_clipping_bounds_the_applied_gradient(tmp_path, data):
    """`optim.clip_grad_norm`: the reported norm is the pre-clip norm, and the gradient the
    optimizer sees has norm at most the limit."""
    from olmo2.train.cli import build
    from olmo2.train.config import TrainConfig, load_config

    from .helpers import RECIPE, args

    cfg = args(tmp_path / "run", data, "optim.clip_grad_norm=0.01", steps=2)[2:]
    t, _ = build(load_config(TrainConfig, RECIPE, cfg))
    seen = []
    step = t.optimizer.step

    def spy(*a, **k):
        grads = [p.grad for p in t.model.parameters() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*a, **k)

    t.optimizer.step = spy
    out = t.train_step(next(iter(t.data)))
    assert out["grad_norm"] > 0.01 and seen[0] == pytest.approx(0.01, rel=1e-4)


def test_in_loop_downstream_tasks(tmp_path, data, data_dir):
    """`data.eval_tasks`: OLMES tasks scored at each eval interval through olmo2.eval."""
    from tests.post.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.backend.save(str(tmp_path / "tok.json"))
    run = tmp_path / "run"
    rc = train(
        run, data, "model.vocab_size=320", "model.eos_token_id=0", "model.pad_token_id=1",
        f"data.tokenizer={tmp_path / 'tok.json'}", "data.eval_tasks=[copa:rc::olmes]",
        "data.eval_tasks_limit=4", f"data.eval_data_dir={data_dir}", "trainer.eval_interval=2",
        steps=4,
    )  # fmt: skip
    assert rc == 0
    evals = read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in evals] == [2, 4]
    assert all(0.0 <= e["eval/copa:rc::olmes"] <= 1.0 for e in evals)
    rc = train(tmp_path / "bad", data, "data.eval_tasks=[copa:rc::olmes]", steps=1)
    assert rc == 2  # no tokenizer: refused before training
