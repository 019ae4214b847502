"""Post-training speed on CPU: olmo2 GRPO (rollout tokens/s, step time), DPO (step time
with cached reference log-probs) and reward-model training (step time), optionally against
TRL's GRPOTrainer / DPOTrainer / RewardTrainer on the same weights and data.

    OMP_NUM_THREADS=1 .venv/bin/python bench/posttrain.py [--size debug] [--steps 6] [--repeats 2]
    .venv/bin/python bench/posttrain.py --only rm --steps 10 --repeats 3   # the RM step alone
    .venv/bin/python bench/posttrain.py --trl-python /tmp/trlvenv/bin/python   # TRL elsewhere

TRL is not a core dependency (`pip install -e .[bench]`); when this python has it, the TRL
side runs with it, else pass `--trl-python` (or `--no-trl`). The TRL side runs as a
subprocess and loads the same HF checkpoint with transformers. Both sides: fp32, CPU, the
same thread count, identical prompts, group size, completion length, batch sizes and β;
DPO with reference log-probs computed before training on both sides. The first step of each
run is warm-up; the best and the median of the remaining steps over all repeats are reported.
A GRPO "rollout" is generation + rewards + reference log-probs (olmo2: the step's
`data_time`; TRL: `_generate_and_score_completions`); tokens are completion tokens.
The RM step: one reward-model checkpoint (random head) loaded by both sides, the pairs
tokenized once by `olmo2 rm`'s reader and handed to TRL as `chosen_ids`/`rejected_ids`, one
forward of chosen ‖ rejected per step, no gradient checkpointing; olmo2's step time includes
collating the batch, TRL's (on_step_begin → on_step_end) does not.
PPO: olmo2 ppo vs TRL's PPOTrainer with the same tokenized prompts, rollout batch, response
length, PPO epochs, mini-batch and coefficients, the bench checkpoint as policy and
reference, and one seeded reward model as both the RM whose score is the reward and the
value model's init; the unit is a rollout plus its epochs of updates (olmo2: the sum of those steps' `step_time`; TRL: between consecutive
`on_step_end`s). TRL 1.16 has no PPOTrainer, so `--trl-ppo-path DIR` puts an older TRL on the
TRL side's PYTHONPATH.

    pip install --no-deps --target /tmp/trl112 trl==1.12.0
    .venv/bin/python bench/posttrain.py --only ppo --trl-ppo-path /tmp/trl112
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTok
from tokenizers import decoders, models, pre_tokenizers, trainers

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2
from olmo2.post import rewards as R
from olmo2.tokenizer import Tokenizer

_BENCH = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_common", _BENCH / "common.py")
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
SIZES, header = _common.SIZES, _common.header

WORDS = "the quick brown fox jumps over the lazy dog and then some more words follow here".split()


def make_checkpoint(root: Path, size: str) -> Path:
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tr = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 50, tr)
    cfg = SIZES[size]
    cfg = type(cfg).from_dict(
        {
            **cfg.to_dict(),
            "eos_token_id": 0,
            "pad_token_id": 1,
            "vocab_size": max(cfg.vocab_size, 512),
        }
    )
    torch.manual_seed(0)
    return save_pretrained(Olmo2.build(cfg), root / "init", tokenizer=Tokenizer(tok, "bench"))


def write_data(root: Path, n: int = 64) -> tuple[Path, Path]:
    rng = random.Random(0)
    pairs = []
    for _ in range(n):
        p = " ".join(rng.choices(WORDS, k=24))
        pairs.append(
            {
                "prompt": p,
                "chosen": " ".join(rng.choices(WORDS, k=20)),
                "rejected": " ".join(rng.choices(WORDS, k=24)),
            }
        )
    (root / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (root / "grpo.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in R.addition_rows(n, seed=0))
    )
    return root / "dpo.jsonl", root / "grpo.jsonl"


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


COMMON = [
    "logging.progress_bar=false",
    "logging.report=false",
    "checkpoint.save_final=false",
    "data.epochs=null",
]


def ours(root: Path, init: Path, dpo: Path, grpo: Path, a) -> dict:
    olmo2_main([
        "grpo", "recipes/demo-grpo.yaml", f"model.load_path={init}", f"data.paths=[{grpo}]",
        f"trainer.run_dir={root / 'grpo'}", f"trainer.max_steps={a.steps}", f"grpo.num_samples={a.group}",
        f"data.global_batch_size={a.prompts}", f"data.micro_batch_size={a.prompts * a.group}",
        f"grpo.max_new_tokens={a.new_tokens}", "grpo.beta=0.01", *COMMON,
    ])  # fmt: skip
    g = metrics(root / "grpo")[1:]
    n = a.prompts * a.group
    olmo2_main([
        "dpo", "recipes/demo-dpo.yaml", f"model.load_path={init}", f"data.paths=[{dpo}]", f"trainer.run_dir={root / 'dpo'}",
        f"trainer.max_steps={a.steps}", f"data.global_batch_size={a.pairs}", f"data.micro_batch_size={a.pairs}", *COMMON,
    ])  # fmt: skip
    d = metrics(root / "dpo")[1:]
    return {
        "grpo_step": [x["step_time"] for x in g],
        "grpo_rollout_tok_s": [x["response_len"] * n / x["data_time"] for x in g],
        "dpo_step": [x["step_time"] for x in d],
        "grpo_tokens": [x["response_len"] * n for x in g],
    }


TRL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, statistics, re
    import torch
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer
    init, dpo_path, grpo_path, steps, prompts, group, new_tokens, pairs, out = sys.argv[1:]
    steps, prompts, group, new_tokens, pairs = map(int, (steps, prompts, group, new_tokens, pairs))
    tok = AutoTokenizer.from_pretrained(init)
    class T(TrainerCallback):
        def __init__(self): self.times, self.t = [], None
        def on_step_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k): self.times.append(time.perf_counter() - self.t)
    def reward(completions, ground_truth, **kw):
        return [10.0 * float(bool(re.findall(r"-?\\d+", c)) and re.findall(r"-?\\d+", c)[-1] == g) for c, g in zip(completions, ground_truth)]
    rows = [json.loads(l) for l in open(grpo_path)]
    ds = Dataset.from_list([{"prompt": tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True), "ground_truth": r["ground_truth"]} for r in rows])
    cb = T()
    roll = []  # (seconds, completion tokens) of each rollout: generation + rewards + ref log-probs
    cfg = GRPOConfig(output_dir=out + "/grpo", per_device_train_batch_size=prompts * group, num_generations=group,
                     max_completion_length=new_tokens, beta=0.01, max_steps=steps, use_cpu=True, report_to=[],
                     logging_steps=1, save_strategy="no", temperature=1.0, loss_type="grpo", bf16=False)
    tr = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(init), reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[cb])
    gen = tr._generate_and_score_completions
    def timed(*a, **k):
        t = time.perf_counter()
        out = gen(*a, **k)
        roll.append((time.perf_counter() - t, float(out["completion_mask"].sum())))
        return out
    tr._generate_and_score_completions = timed
    tr.train()
    prs = [json.loads(l) for l in open(dpo_path)]
    to_chat = lambda p, c: (tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True), c + tok.eos_token)
    dds = Dataset.from_list([{"prompt": to_chat(r["prompt"], "")[0], "chosen": r["chosen"] + tok.eos_token, "rejected": r["rejected"] + tok.eos_token} for r in prs])
    cb2 = T()
    dcfg = DPOConfig(output_dir=out + "/dpo", per_device_train_batch_size=pairs, max_steps=steps, use_cpu=True, report_to=[],
                     precompute_ref_log_probs=True, beta=5.0, loss_type=["sigmoid_norm"], save_strategy="no", logging_steps=1, bf16=False)
    dt = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(init), args=dcfg, train_dataset=dds, processing_class=tok, callbacks=[cb2])
    dt.train()
    print(json.dumps({"grpo_step": cb.times[1:], "grpo_rollout_tok_s": [n / t for t, n in roll[1:]],
                      "grpo_tokens": [n for t, n in roll[1:]],
                      "dpo_step": cb2.times[1:]}))
    """
)


def trl(python: str, root: Path, init: Path, dpo: Path, grpo: Path, a) -> dict:
    script = root / "trl_bench.py"
    script.write_text(TRL_SCRIPT)
    args = [
        python,
        str(script),
        str(init),
        str(dpo),
        str(grpo),
        str(a.steps),
        str(a.prompts),
        str(a.group),
        str(a.new_tokens),
        str(a.pairs),
        str(root / "trl"),
    ]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"TRL side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- reward model ---------------------------------------------------------------------------------


def make_reward_checkpoint(root: Path, init: Path, tokenizer: Tokenizer | None = None) -> Path:
    """A seeded `Olmo2Reward` of `init`'s size, saved as an Olmo2ForSequenceClassification dir
    (with `init`'s tokenizer, or `tokenizer`)."""
    from olmo2.model.hf import read_config
    from olmo2.model.reward import Olmo2Reward

    torch.manual_seed(0)
    rm = Olmo2Reward.build(read_config(init))
    tok = tokenizer or Tokenizer.from_file(init)
    return save_pretrained(rm, root / "rm_init", tokenizer=tok)


def hh_pairs(root: Path, vocab: int, n: int = 256) -> tuple[Path, Tokenizer] | None:
    """Real preference pairs: the first `n` rows of the shared hh-rlhf harmless-base test split
    (None without the shared data) and a byte-level BPE of the model's vocabulary trained on
    them (so the tiny model can read them; the dolma2 tokenizer has 100k ids)."""
    import gzip

    from olmo2.utils import data_dir

    d = data_dir(required=False)
    src = d / "posttrain" / "hh_rlhf_harmless_base_test.jsonl.gz" if d else None
    if src is None or not src.is_file():
        return None
    rows = [json.loads(x) for x in gzip.open(src, "rt")][:n]
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator([r["chosen"] + r["rejected"] for r in rows], tr)
    out = root / "hh.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, Tokenizer(tok, "bench-hh")


def rm_ids(root: Path, init: Path, pairs: Path, batch: int) -> Path:
    """The pairs as `olmo2 rm` tokenizes them, in the order its sampler visits them (data.seed
    0), for the TRL side, which reads them in order: step k of both sides trains on the same
    pairs."""
    from olmo2.post.common import EpochSampler
    from olmo2.post.data import RowErrors
    from olmo2.post.rm import RMDataSection, tokenize_rm_pairs

    ex = tokenize_rm_pairs(
        Tokenizer.from_file(init), RMDataSection(paths=[str(pairs)], seq_len=1024), RowErrors()
    )
    ex = [ex[i] for i in EpochSampler(len(ex), batch, 0, what="pairs", rank=0, world=1).rows(0)]
    out = root / "rm_ids.jsonl"
    out.write_text(
        "".join(json.dumps({"chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}) + "\n"
                for e in ex)
    )  # fmt: skip
    return out


def rm_ours(root: Path, rm_init: Path, pairs: Path, a, shared: bool) -> list[float]:
    run = root / f"rm-shared-{shared}"
    olmo2_main([
        "rm", "recipes/demo-rm.yaml", f"model.load_path={rm_init}", f"data.paths=[{pairs}]",
        f"trainer.run_dir={run}", f"trainer.max_steps={a.steps}", "data.max_rows=null",
        "data.exclude_heldout=false", "data.seq_len=1024", f"data.global_batch_size={a.pairs}",
        f"data.micro_batch_size={a.pairs}", f"rm.shared_prompt={str(shared).lower()}",
        "data.seed=0", *COMMON,
    ])  # fmt: skip
    return [x["step_time"] for x in metrics(run)[1:]]


RM_TRL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    init, ids_path, steps, pairs, out = sys.argv[1:]
    steps, pairs = int(steps), int(pairs)
    class T(TrainerCallback):
        def __init__(self): self.times, self.t = [], None
        def on_step_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k): self.times.append(time.perf_counter() - self.t)
    ds = Dataset.from_list([json.loads(l) for l in open(ids_path)])
    cb = T()
    cfg = RewardConfig(output_dir=out, per_device_train_batch_size=pairs, max_steps=steps, use_cpu=True,
                       report_to=[], save_strategy="no", logging_steps=1, bf16=False,
                       gradient_checkpointing=False, max_length=None, learning_rate=1e-4)
    model = AutoModelForSequenceClassification.from_pretrained(init, dtype=torch.float32)
    class InOrder(RewardTrainer):  # the pairs in the order olmo2's sampler visits them
        def _get_train_sampler(self, *a, **k): return torch.utils.data.SequentialSampler(self.train_dataset)
    tr = InOrder(model=model, args=cfg, train_dataset=ds,
                       processing_class=AutoTokenizer.from_pretrained(init), callbacks=[cb])
    tr.train()
    print(json.dumps({"rm_step": cb.times[1:]}))
    """
)


def rm_trl(python: str, root: Path, rm_init: Path, ids: Path, a) -> list[float]:
    script = root / "trl_rm_bench.py"
    script.write_text(RM_TRL_SCRIPT)
    args = [
        python,
        str(script),
        str(rm_init),
        str(ids),
        str(a.steps),
        str(a.pairs),
        str(root / "trl_rm"),
    ]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"TRL RewardTrainer side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rm_step"]


def rm_bench(root: Path, init: Path, pairs: Path, a, trl_python: str | None) -> None:
    """olmo2 rm (the default: a pair per row, its prompt once; and `rm.shared_prompt=false`:
    two rows per pair, as TRL batches) vs TRL RewardTrainer step time, interleaved repeats,
    on the synthetic pairs and on real hh-rlhf pairs; prints best/median."""
    sets = {"synthetic": (root / "rm-synthetic", pairs, None)}
    if (hh := hh_pairs(root, read_vocab(init))) is not None:
        sets["hh-rlhf"] = (root / "rm-hh", *hh)
    for name, (d, data, tok) in sets.items():
        d.mkdir()
        rm_init = make_reward_checkpoint(d, init, tok)
        rm_one(d, name, rm_init, data, rm_ids(d, rm_init, data, a.pairs), a, trl_python)


def read_vocab(init: Path) -> int:
    from olmo2.model.hf import read_config

    return read_config(init).vocab_size


def rm_one(root: Path, name: str, rm_init: Path, pairs: Path, ids: Path, a, trl_python) -> None:
    times: dict[str, list[float]] = {"olmo2": [], "2-rows": [], "trl": []}
    for r in range(a.repeats):
        rr = root / f"rm{r}"
        rr.mkdir()
        times["olmo2"] += rm_ours(rr, rm_init, pairs, a, shared=True)
        times["2-rows"] += rm_ours(rr, rm_init, pairs, a, shared=False)
        if trl_python:
            times["trl"] += rm_trl(trl_python, rr, rm_init, ids, a)
    res = {k: {"best": min(v), "median": statistics.median(v), "n": len(v)}
           for k, v in times.items() if v}  # fmt: skip
    print(f"RM step, {name} data, {a.pairs} pairs per step: best/median s")
    for k, v in res.items():
        print(f"{k:6} {v['best']:6.4f}/{v['median']:.4f}  ({v['n']} steps)")
    for k in ("olmo2", "2-rows") if "trl" in res else ():
        t, o = res["trl"], res[k]
        # step i of every run trains on the same pairs on both sides: paired ratios and totals
        paired = statistics.median(x / y for x, y in zip(times["trl"], times[k], strict=True))
        total = sum(times["trl"]) / sum(times[k])
        print(f"speed-up RM step ({k} vs TRL): best {t['best'] / o['best']:.2f}x, "
              f"median {t['median'] / o['median']:.2f}x, paired median {paired:.2f}x, "
              f"total time {total:.2f}x")  # fmt: skip
    print(json.dumps({f"rm_step_{name}": res}))


# ---- PPO ------------------------------------------------------------------------------------------


def ppo_ours(root: Path, init: Path, rm_init: Path, prompts: Path, a) -> list[float]:
    """Seconds per rollout of `olmo2 ppo` (generation + scoring + the no-grad forwards + its
    `ppo_epochs` optimizer steps: the sum of their step times), the first rollout dropped."""
    olmo2_main([
        "ppo", "recipes/demo-ppo.yaml", f"model.load_path={init}", f"data.paths=[{prompts}]",
        f"trainer.run_dir={root / 'ppo'}", f"trainer.max_steps={a.steps * a.ppo_epochs}",
        f"ppo.value_path={rm_init}", f"ppo.reward_model_path={rm_init}", "ppo.reward_model_multiplier=1.0",
        f"data.global_batch_size={a.prompts * a.group}", f"data.micro_batch_size={a.prompts * a.group}",
        f"ppo.max_new_tokens={a.new_tokens}", f"ppo.ppo_epochs={a.ppo_epochs}", "ppo.mini_batches=1",
        "ppo.non_stop_penalty=null", "ppo.beta=0.05", "optim.clip_grad_norm=null", "data.seq_len=64", *COMMON,
    ])  # fmt: skip
    steps = [x["step_time"] for x in metrics(root / "ppo")]
    per_rollout = [sum(steps[i : i + a.ppo_epochs]) for i in range(0, len(steps), a.ppo_epochs)]
    return per_rollout[1:]


PPO_TRL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer, TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    init, rm, ids_path, rollouts, batch, new_tokens, epochs, out = sys.argv[1:]
    rollouts, batch, new_tokens, epochs = int(rollouts), int(batch), int(new_tokens), int(epochs)
    class T(TrainerCallback):  # PPOTrainer calls on_step_end once per rollout + its updates
        def __init__(self): self.times, self.t = [], None
        def on_train_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k):
            now = time.perf_counter(); self.times.append(now - self.t); self.t = now
    tok = AutoTokenizer.from_pretrained(init, padding_side="left")
    ds = Dataset.from_list([json.loads(l) for l in open(ids_path)])
    cfg = PPOConfig(output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                    num_mini_batches=1, num_ppo_epochs=epochs, local_rollout_forward_batch_size=batch,
                    total_episodes=rollouts * batch, response_length=new_tokens, temperature=1.0,
                    stop_token="eos", missing_eos_penalty=None, kl_coef=0.05, kl_estimator="k1",
                    vf_coef=0.1, cliprange=0.2, cliprange_value=0.2, gamma=1.0, lam=0.95,
                    whiten_rewards=False, num_sample_generations=0, learning_rate=1e-4,
                    use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=1,
                    max_grad_norm=1e9, gradient_checkpointing=False)
    f32 = dict(dtype=torch.float32)
    cb = T()
    tr = PPOTrainer(args=cfg, processing_class=tok,
                    model=AutoModelForCausalLM.from_pretrained(init, **f32),
                    ref_model=AutoModelForCausalLM.from_pretrained(init, **f32),
                    reward_model=AutoModelForSequenceClassification.from_pretrained(rm, **f32),
                    value_model=AutoModelForSequenceClassification.from_pretrained(rm, **f32),
                    train_dataset=ds, callbacks=[cb])
    tr.train()
    print(json.dumps({"ppo_rollout": cb.times[1:]}))
    """
)


def ppo_prompt_ids(root: Path, init: Path, prompts: Path) -> Path:
    """The prompts as `olmo2 ppo` tokenizes them (chat template), for the TRL side."""
    from olmo2.post.data import PostDataSection, RowErrors
    from olmo2.post.grpo import tokenize_prompts

    ps = tokenize_prompts(
        Tokenizer.from_file(init), PostDataSection(paths=[str(prompts)], seq_len=64), RowErrors()
    )
    out = root / "ppo_ids.jsonl"
    out.write_text("".join(json.dumps({"input_ids": p.ids}) + "\n" for p in ps))
    return out


def ppo_trl(python: str, pythonpath: str | None, root: Path, init: Path, rm_init: Path,
            ids: Path, a) -> list[float]:  # fmt: skip
    script = root / "trl_ppo_bench.py"
    script.write_text(PPO_TRL_SCRIPT)
    batch = a.prompts * a.group
    args = [python, str(script), str(init), str(rm_init), str(ids), str(a.steps), str(batch),
            str(a.new_tokens), str(a.ppo_epochs), str(root / "trl_ppo")]  # fmt: skip
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"TRL PPOTrainer side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["ppo_rollout"]


def ppo_bench(root: Path, init: Path, a, trl_python: str | None) -> None:
    """olmo2 ppo vs TRL's PPOTrainer (`trl.experimental.ppo`: in TRL 1.10 and 1.12, not 1.15+):
    seconds per rollout batch (generation + scoring + policy/reference/value forwards + the
    PPO epochs' updates), same checkpoint as policy/reference, one seeded reward model as RM
    and value init, the same tokenized prompts, batch, response length, epochs and
    coefficients; interleaved repeats; prints best/median and the ratio."""
    rm_init = make_reward_checkpoint(root, init)
    prompts = root / "ppo.jsonl"
    rows = R.addition_rows(a.prompts * a.group * a.steps, seed=1)
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = ppo_prompt_ids(root, init, prompts)
    times: dict[str, list[float]] = {"olmo2": [], "trl": []}
    for r in range(a.repeats):
        rr = root / f"ppo{r}"
        rr.mkdir()
        times["olmo2"] += ppo_ours(rr, init, rm_init, prompts, a)
        if trl_python:
            times["trl"] += ppo_trl(trl_python, a.trl_ppo_path, rr, init, rm_init, ids, a)
    res = {k: {"best": min(v), "median": statistics.median(v), "n": len(v)}
           for k, v in times.items() if v}  # fmt: skip
    print(f"PPO rollout of {a.prompts * a.group} x {a.new_tokens} tokens + {a.ppo_epochs} "
          "epochs of updates: best/median s")  # fmt: skip
    for k, v in res.items():
        print(f"{k:6} {v['best']:6.3f}/{v['median']:.3f}  ({v['n']} rollouts)")
    if "trl" in res:
        o, t = res["olmo2"], res["trl"]
        print(f"speed-up PPO rollout+update: best {t['best'] / o['best']:.2f}x, "
              f"median {t['median'] / o['median']:.2f}x")  # fmt: skip
    print(json.dumps({"ppo_rollout": res}))


def summarise(runs: list[dict]) -> dict:
    """Best (min step time, max tokens/s) and median over every measured step of every repeat."""
    out = {}
    for key, best in (("grpo_step", min), ("grpo_rollout_tok_s", max), ("dpo_step", min)):
        xs = [x for r in runs for x in r[key]]
        out[key] = {"best": best(xs), "median": statistics.median(xs), "n": len(xs)}
    out["grpo_tokens_per_rollout"] = statistics.mean(x for r in runs for x in r["grpo_tokens"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="debug", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, interleaved")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    p.add_argument(
        "--trl-python",
        default=sys.executable if importlib.util.find_spec("trl") else None,
        help="python of a venv with trl installed (default: this one, when it has trl)",
    )
    p.add_argument("--no-trl", action="store_true", help="measure olmo2 only")
    p.add_argument(
        "--only",
        choices=["rm", "ppo"],
        help="run one benchmark (rm: the reward-model step; ppo: a PPO rollout and its updates)",
    )
    p.add_argument("--ppo-epochs", type=int, default=4, help="PPO epochs per rollout")
    p.add_argument(
        "--trl-ppo-path",
        help="PYTHONPATH for the TRL PPO side: TRL 1.16 has no PPOTrainer (removed in "
        "huggingface/trl#7020); e.g. `pip install --no-deps --target DIR trl==1.12.0`",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the TRL subprocess
    header(
        f"post-training, size {a.size}: GRPO {a.prompts} prompts x {a.group} samples x {a.new_tokens} tokens; "
        f"DPO {a.pairs} pairs; {a.threads} thread(s), {a.steps} steps x {a.repeats} repeats"
    )
    use_trl = a.trl_python and not a.no_trl
    runs: dict[str, list[dict]] = {"olmo2": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        init = make_checkpoint(root, a.size)
        dpo, grpo = write_data(root)
        if a.only in (None, "rm"):
            rm_bench(root, init, dpo, a, a.trl_python if use_trl else None)
        if a.only in (None, "ppo"):
            ppo_bench(root, init, a, a.trl_python if use_trl else None)
        if a.only is not None:
            return
        for r in range(a.repeats):
            rr = root / f"r{r}"
            rr.mkdir()
            runs["olmo2"].append(ours(rr, init, dpo, grpo, a))
            if use_trl:
                runs["trl"].append(trl(a.trl_python, rr, init, dpo, grpo, a))
    res = {k: summarise(v) for k, v in runs.items() if v}
    print(
        f"{'':6} {'GRPO step s':>12} {'rollout tok/s':>14} {'DPO step s':>11}   (best/median)  tokens/rollout"
    )
    for k, v in res.items():
        print(
            f"{k:6} {v['grpo_step']['best']:6.3f}/{v['grpo_step']['median']:.3f} "
            f"{v['grpo_rollout_tok_s']['best']:7.0f}/{v['grpo_rollout_tok_s']['median']:.0f} "
            f"{v['dpo_step']['best']:6.3f}/{v['dpo_step']['median']:.3f}"
            f"   {v['grpo_tokens_per_rollout']:14.0f}"
        )
    if "trl" in res:
        o, t = res["olmo2"], res["trl"]
        for stat in ("best", "median"):
            print(
                f"speed-up ({stat}): GRPO step {t['grpo_step'][stat] / o['grpo_step'][stat]:.2f}x, "
                f"rollout {o['grpo_rollout_tok_s'][stat] / t['grpo_rollout_tok_s'][stat]:.2f}x, "
                f"DPO step {t['dpo_step'][stat] / o['dpo_step'][stat]:.2f}x"
            )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
