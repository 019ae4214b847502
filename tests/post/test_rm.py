"""`olmo2 rm`: the saved checkpoint is transformers' `Olmo2ForSequenceClassification` with
equal scores, the objective equals a hand computation, tiny RMs learn learnable preference
rules (measured on held-out pairs), SIGKILL resume is exact, 2-process DDP/FSDP runs equal
one process, bad input is refused."""

from __future__ import annotations

import gzip
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import olmo2
from olmo2.cli import main as olmo2_main
from olmo2.eval.harness import Harness, evaluate
from olmo2.eval.tasks.reward import HH_HARMLESS, is_heldout
from olmo2.model.reward import Olmo2Reward, sequence_scores
from olmo2.post.data import BadRow, RowErrors, preference_pair
from olmo2.post.dpo import collate_pairs
from olmo2.post.rm import (
    RMConfig,
    RMDataSection,
    RMObjective,
    shared_prompt_rows,
    tokenize_rm_pairs,
)
from olmo2.train.config import load_config
from tests.post.helpers import (
    kill_and_resume,
    tiny_checkpoint,
    tiny_config,
    tiny_tokenizer,
    write_jsonl,
)
from tests.post.test_resume import ENV

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models here run faster on one thread than on two contending ones (10x on a
    loaded 2-core machine); the count is restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


WORDS = ["fox", "dog", "hello", "the", "you", "fine", "quick", "lazy", "brown", "over"]
PAD = 1


def longer_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen is always the longer reply (3-5 words more), words drawn at random."""
    rng = random.Random(seed)

    def words(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        short = rng.randint(1, 3)
        rows.append(
            {
                "prompt": f"{words(3)} {i}",
                "chosen": words(short + rng.randint(3, 5)),
                "rejected": words(short),
            }
        )
    return rows


def word_pairs(n: int, seed: int = 0) -> list[dict]:
    """Replies of one length that differ in one word: chosen says "good", rejected "bad"
    (a content rule: length carries no signal)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        filler = [rng.choice(WORDS) for _ in range(3)]
        at = rng.randint(0, 3)
        reply = [*filler[:at], "{}", *filler[at:]]
        rows.append(
            {
                "prompt": f"{' '.join(rng.choice(WORDS) for _ in range(3))} {i}",
                "chosen": " ".join(reply).format("good"),
                "rejected": " ".join(reply).format("bad"),
            }
        )
    return rows


def data_dir_with(tmp_path: Path, rows: list[dict]) -> Path:
    """A data directory whose hh-rlhf harmless file holds `rows` (the eval task's file)."""
    d = tmp_path / "data"
    (d / HH_HARMLESS).parent.mkdir(parents=True)
    with gzip.open(d / HH_HARMLESS, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return d


def rm_args(run_dir, init, data, *extra, steps=None):
    over = [f"trainer.max_steps={steps}", "data.epochs=null"] if steps else []
    return [
        "rm", "recipes/demo-rm.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={run_dir}", "data.max_rows=null", "data.seq_len=64",
        "data.global_batch_size=8", "data.micro_batch_size=4", "optim.lr=3e-3",
        "checkpoint.save_interval=0", "logging.progress_bar=false", "logging.report=false",
        "logging.peak_flops=1e11", *over, *extra,
    ]  # fmt: skip


def heldout_accuracy(ckpt: Path, data_dir: Path) -> float:
    model, tok = olmo2.load(ckpt)
    harness = Harness(model, tok, batch_size=16, progress=False)
    res = evaluate(harness, ["hh_rlhf_harmless:rm::heldout"], data_dir)
    return res["tasks"]["hh_rlhf_harmless:rm::heldout"]["metrics"]["accuracy"]


def train(tmp_path: Path, rows: list[dict], seed: int = 0, name: str = "run") -> Path:
    init = tiny_checkpoint(tmp_path, seed=seed) if not (tmp_path / "init").exists() else None
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = tmp_path / name
    extra = [f"trainer.seed={seed}", f"data.seed={seed}"]
    assert olmo2_main(rm_args(run, init or tmp_path / "init", data, *extra)) == 0
    return max(run.glob("rm-step*"), key=lambda p: int(p.name.split("step")[1]))


# ---- the checkpoint is transformers' --------------------------------------------------------


def test_trained_checkpoint_loads_in_transformers_with_equal_scores(tmp_path):
    """The `rm-step{N}` directory is transformers' `Olmo2ForSequenceClassification`: scores
    equal to 1e-5 on right- and left-padded batches, and equal to the scores the training
    objective reads from its shared-prompt rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ckpt = train(tmp_path, longer_pairs(48))
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["Olmo2ForSequenceClassification"]
    assert cfg["pad_token_id"] == PAD and cfg["id2label"] == {"0": "LABEL_0"}
    assert set(load_file(ckpt / "model.safetensors")) >= {"score.weight"}
    hf = AutoModelForSequenceClassification.from_pretrained(ckpt, dtype=torch.float32).eval()
    assert hf.config.num_labels == 1 and AutoTokenizer.from_pretrained(ckpt).pad_token_id == PAD
    ours, tok = olmo2.load(ckpt)
    ex = tokenize_rm_pairs(tok, RMDataSection(paths=[str(tmp_path / "pairs.jsonl")]), RowErrors())
    seqs = [e.chosen_ids for e in ex[:3]] + [e.rejected_ids for e in ex[:3]]
    T = max(map(len, seqs))
    with torch.no_grad():
        alone = torch.stack([hf(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs])
        for left in (False, True):
            pad = [[PAD] * (T - len(s)) for s in seqs]
            ids = torch.tensor([p + s if left else s + p for p, s in zip(pad, seqs)])
            got = sequence_scores(ours, ids, PAD)
            want = hf(input_ids=ids, attention_mask=(ids != PAD).long()).logits.squeeze(-1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=0)
        chosen, rejected = RMObjective(PAD).scores(ours, shared_prompt_rows(ex, [0, 1, 2], PAD))
    torch.testing.assert_close(torch.cat([chosen, rejected]), alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prompt", "two-rows"])
def test_objective_equals_hand_bradley_terry(tmp_path, shared):
    """RMObjective on both batch layouts: per-pair −log σ(r_c − r_r − m) from the scores of
    each conversation alone, accuracy and margin sums."""
    tok = tiny_tokenizer()
    data = write_jsonl(tmp_path / "p.jsonl", longer_pairs(6) + word_pairs(4))
    ex = tokenize_rm_pairs(tok, RMDataSection(paths=[str(data)], seq_len=64), RowErrors())
    torch.manual_seed(0)
    rm = Olmo2Reward.build(tiny_config())
    idx = list(range(len(ex)))
    batch = (shared_prompt_rows if shared else collate_pairs)(ex, idx, PAD)
    if shared:  # the prompt is in the row once: shorter than the longer side twice
        assert batch["ids"].shape[1] < 2 * max(len(e.chosen_ids) for e in ex)
    margin = 0.3
    loss, m = RMObjective(PAD, margin).loss(rm, batch)
    with torch.no_grad():
        rc = [rm(torch.tensor([e.chosen_ids]))[0, -1].item() for e in ex]
        rr = [rm(torch.tensor([e.rejected_ids]))[0, -1].item() for e in ex]
    want = sum(math.log1p(math.exp(-(c - r - margin))) for c, r in zip(rc, rr))
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert m["accuracy"].item() == sum(c > r for c, r in zip(rc, rr))
    assert m["margin"].item() == pytest.approx(sum(rc) - sum(rr), rel=1e-5, abs=1e-5)
    assert m["score/chosen"].item() == pytest.approx(sum(rc), rel=1e-5, abs=1e-5)
    assert RMObjective(PAD).units(batch) == len(ex)


def test_shared_prompt_rows_layout():
    from olmo2.post.dpo import PairExample

    ex = [PairExample([5, 6, 7, 8], [], [5, 6, 9], []), PairExample([3, 4], [], [3, 4, 2], [])]
    b = shared_prompt_rows(ex, [0, 1], PAD)
    assert b["ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, 4, 2, PAD]]
    assert b["positions"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 0]]
    assert b["seg"].tolist() == [[0, 0, 1, 1, 2], [0, 1, 2, 2, -1]]
    assert b["last"].tolist() == [[3, 4], [1, 3]]  # chosen [3, 4] is a prefix: it keeps its 4


# ---- it learns ------------------------------------------------------------------------------------


def test_learns_that_longer_is_chosen(tmp_path):
    rows = longer_pairs(160)
    ckpt = train(tmp_path, rows)
    m = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["loss"] < m[0]["loss"]
    assert heldout_accuracy(ckpt, data_dir_with(tmp_path, rows)) >= 0.95


SEEDS = (0, 1, 2)


def test_beats_chance_on_heldout_pairs_over_seeds(tmp_path):
    """A content rule (the "good" reply over the "bad" one, equal lengths, so length carries
    no signal): held-out accuracy over three seeds (pairs, init and data order). Measured on
    this CPU: 1.00 on 33, 38 and 22 held-out pairs (chance would reach 0.85 on 30 pairs with
    probability < 1e-4); asserted with a wide margin over 0.5."""
    accs, held = [], []
    for seed in SEEDS:
        rows = word_pairs(320, seed)
        work = tmp_path / f"seed{seed}"
        work.mkdir()
        accs.append(heldout_accuracy(train(work, rows, seed), data_dir_with(work, rows)))
        held.append(sum(is_heldout([{"role": "user", "content": r["prompt"]}]) for r in rows))
    assert min(held) >= 15, held
    assert sum(accs) / len(accs) >= 0.85 and min(accs) >= 0.7, accs


# ---- SIGKILL resume -------------------------------------------------------------------------------

STEPS = 8
VOLATILE = {"data_time", "step_time", "tokens_per_s", "mfu", "memory_gb", "eta_s"}


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.slow  # three process starts: ~25 s on a loaded 2-core CPU
@pytest.mark.timeout(300)
def test_sigkill_resume_is_exact(tmp_path):
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "pairs.jsonl", longer_pairs(40))

    def cmd(run):
        args = rm_args(run, init, data, "checkpoint.save_interval=3", "checkpoint.keep_last=2",
                       steps=STEPS)  # fmt: skip
        return [sys.executable, "-m", "olmo2", *args]

    ref, run, stdout = kill_and_resume(cmd, tmp_path, STEPS, ENV)
    assert "resumed from rm-step" in stdout
    assert _metrics(run) == _metrics(ref)


@pytest.mark.slow  # two torchrun starts: ~25 s
@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one(tmp_path, strategy):
    from tests.train.test_distributed import _free_port

    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "pairs.jsonl", longer_pairs(40))
    cpu = ["trainer.device=cpu", "distributed.param_dtype=fp32"]
    assert olmo2_main(rm_args(tmp_path / "one", init, data, *cpu, steps=4)) == 0
    two = rm_args(tmp_path / "two", init, data, *cpu, f"distributed.strategy={strategy}", steps=4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "olmo2", *two]  # fmt: skip
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for key in ("loss", "accuracy", "margin"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in one], abs=1e-5)


# ---- bad input --------------------------------------------------------------------------------------


def test_an_rm_checkpoint_starts_with_all_its_weights(tmp_path):
    ckpt = train(tmp_path, longer_pairs(24))
    run = tmp_path / "more"
    assert olmo2_main(rm_args(run, ckpt, tmp_path / "pairs.jsonl", "optim.lr=0", steps=1)) == 0
    before, after = (
        load_file(ckpt / "model.safetensors"),
        load_file(run / "rm-step1" / "model.safetensors"),
    )
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_wrong_head_shape_is_refused_before_anything_is_written(tmp_path, capsys):
    ckpt = train(tmp_path, longer_pairs(24))
    sd = load_file(ckpt / "model.safetensors")
    sd["score.weight"] = torch.zeros(3, sd["score.weight"].shape[1])
    save_file(sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    (ckpt / "olmo2.json").unlink()  # no recorded hashes: the head check itself must refuse it
    run = tmp_path / "again"
    assert olmo2_main(rm_args(run, ckpt, tmp_path / "pairs.jsonl", steps=2)) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "score.weight has shape [3, 32]" in err and "num_labels 1" in err
    assert not run.exists()


def test_empty_sides_are_counted_or_refused_with_their_row(tmp_path, capsys):
    init = tiny_checkpoint(tmp_path)
    rows = longer_pairs(20) + [
        {"prompt": "q", "chosen": "", "rejected": "x"},
        {"prompt": "q", "chosen": "a", "rejected": "   "},
        {"prompt": "q", "chosen": "fox dog " * 40, "rejected": "x"},
    ]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    assert olmo2_main(rm_args(tmp_path / "run", init, data, steps=2)) == 0
    out = capsys.readouterr().out
    assert "3 bad rows skipped" in out and "2 empty chosen/rejected" in out
    assert f"{data}: row 21" in out and "longer than data.seq_len" in out
    strict = tmp_path / "strict"
    assert olmo2_main(rm_args(strict, init, data, "--strict", steps=2)) == 2
    assert f"{data}: row 21: empty chosen/rejected" in capsys.readouterr().err
    assert not strict.exists()


def test_pad_id_must_match_the_tokenizer(tmp_path, capsys):
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "p.jsonl", longer_pairs(20))
    run = tmp_path / "run"
    assert olmo2_main(rm_args(run, init, data, "model.pad_token_id=2", steps=2)) == 2
    assert "set model.pad_token_id=1" in capsys.readouterr().err and not run.exists()


# ---- data and recipes ---------------------------------------------------------------------------------


def test_heldout_pairs_are_left_out_of_training(tmp_path, data_dir):
    rows = [json.loads(x) for x in gzip.open(data_dir / HH_HARMLESS, "rt")][:300]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    tok = tiny_tokenizer()
    section = RMDataSection(paths=[str(path)], seq_len=1 << 20, exclude_heldout=True)
    kept = tokenize_rm_pairs(tok, section, RowErrors())
    usable = []
    for r in rows:
        try:
            usable.append(preference_pair(r))
        except BadRow:
            pass
    held = [u for u in usable if is_heldout(u[0])]
    assert 0.05 * len(usable) < len(held) < 0.15 * len(usable)
    assert len(kept) == len(usable) - len(held)
    texts = {tok.decode(e.chosen_ids) for e in kept}
    assert not any(any(c in t for t in texts) for _, c, _ in held)


def test_recipes_load_with_the_published_numbers():
    demo = load_config(RMConfig, RECIPES / "demo-rm.yaml", ["model.load_path=x"])
    assert demo.data.exclude_heldout and demo.trainer.run_dir == "runs/demo/rm"
    rm = load_config(RMConfig, RECIPES / "olmo2-7b-rm.yaml")
    # allenai/open-instruct docs/archived_dev_scripts/olmo2_1124.sh, "# 7b RM"
    assert (rm.optim.lr, rm.data.epochs, rm.data.seq_len, rm.data.global_batch_size) == (
        3e-6, 1.0, 2048, 128
    )  # fmt: skip
    assert (rm.optim.eps, rm.schedule.name, rm.schedule.warmup_steps, rm.rm.margin) == (
        1e-5, "linear", 0, 0.0
    )  # fmt: skip
    with pytest.raises(ValueError, match="stage"):
        load_config(RMConfig, RECIPES / "demo-rm.yaml", ["model.load_path=x", "trainer.stage=2"])
