"""Post-training speed on CPU: olmo2 GRPO (rollout tokens/s, step time) and DPO (step time
with cached reference log-probs), optionally against TRL's GRPOTrainer / DPOTrainer on the
same weights and data.

    .venv/bin/python bench/posttrain.py [--size debug] [--steps 4]
    .venv/bin/python bench/posttrain.py --trl-python /tmp/trlvenv/bin/python   # + TRL

TRL is not a dependency: install it into its own venv (`python -m venv /tmp/trlvenv &&
/tmp/trlvenv/bin/pip install trl`); the TRL side runs there as a subprocess and loads the
same HF checkpoint with transformers. Both sides: fp32, CPU, identical prompts, group size,
completion length, batch sizes and β; the median step after one warm-up step is reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
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
        "grpo_step_s": statistics.median(x["step_time"] for x in g),
        "grpo_rollout_tok_s": statistics.median(x["response_len"] * n / x["data_time"] for x in g),
        "dpo_step_s": statistics.median(x["step_time"] for x in d),
    }


TRL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, statistics, re
    import torch
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
    cfg = GRPOConfig(output_dir=out + "/grpo", per_device_train_batch_size=prompts * group, num_generations=group,
                     max_completion_length=new_tokens, beta=0.01, max_steps=steps, use_cpu=True, report_to=[],
                     logging_steps=1, save_strategy="no", temperature=1.0, loss_type="grpo", bf16=False)
    tr = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(init), reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[cb])
    tr.train()
    grpo_step = statistics.median(cb.times[1:])
    prs = [json.loads(l) for l in open(dpo_path)]
    to_chat = lambda p, c: (tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True), c + tok.eos_token)
    dds = Dataset.from_list([{"prompt": to_chat(r["prompt"], "")[0], "chosen": r["chosen"] + tok.eos_token, "rejected": r["rejected"] + tok.eos_token} for r in prs])
    cb2 = T()
    dcfg = DPOConfig(output_dir=out + "/dpo", per_device_train_batch_size=pairs, max_steps=steps, use_cpu=True, report_to=[],
                     precompute_ref_log_probs=True, beta=5.0, loss_type=["sigmoid_norm"], save_strategy="no", logging_steps=1, bf16=False)
    dt = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(init), args=dcfg, train_dataset=dds, processing_class=tok, callbacks=[cb2])
    dt.train()
    print(json.dumps({"grpo_step_s": grpo_step, "dpo_step_s": statistics.median(cb2.times[1:])}))
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="debug", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--trl-python", help="python of a venv with trl installed")
    a = p.parse_args()
    header(
        f"post-training, size {a.size}: GRPO {a.prompts} prompts x {a.group} samples x {a.new_tokens} tokens; DPO {a.pairs} pairs"
    )
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        init = make_checkpoint(root, a.size)
        dpo, grpo = write_data(root)
        res = {"olmo2": ours(root, init, dpo, grpo, a)}
        if a.trl_python:
            res["trl"] = trl(a.trl_python, root, init, dpo, grpo, a)
    o = res["olmo2"]
    print(
        f"olmo2 GRPO step {o['grpo_step_s']:.3f}s, rollout {o['grpo_rollout_tok_s']:.0f} tok/s; DPO step {o['dpo_step_s']:.3f}s"
    )
    if "trl" in res:
        t = res["trl"]
        print(f"TRL   GRPO step {t['grpo_step_s']:.3f}s; DPO step {t['dpo_step_s']:.3f}s")
        print(
            f"speed-up: GRPO {t['grpo_step_s'] / o['grpo_step_s']:.2f}x, DPO {t['dpo_step_s'] / o['dpo_step_s']:.2f}x"
        )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
