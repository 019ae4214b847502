"""Log-likelihood scoring speed: olmo2's eval harness vs lm-eval's `hf` backend (HFLM over
transformers), same weights, same OLMES requests.

    .venv/bin/python bench/eval.py [--sizes debug 100m] [--tasks arc_easy:rc::olmes ...]
                                   [--limit 20] [--repeats 2]

Prints requests/s for each, the ratio olmo2 / lm-eval (best of N, measured in the same run)
and the largest difference between the two log-likelihoods (they must agree). Needs lm-eval
(`pip install lm-eval==0.4.13`) and the shared data directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, best_of, header  # noqa: E402

from olmo2.eval.harness import Harness  # noqa: E402
from olmo2.eval.tasks import get_task  # noqa: E402
from olmo2.model.hf import save_pretrained  # noqa: E402
from olmo2.model.transformer import Olmo2  # noqa: E402
from olmo2.tokenizer import Tokenizer  # noqa: E402
from olmo2.utils import data_dir  # noqa: E402


def requests(tasks: list[str], ddir: Path, limit: int) -> list[tuple[str, str]]:
    out = []
    for key in tasks:
        task = get_task(key)
        out += [(r.context, r.continuation) for r in task.requests(task.docs(ddir, limit))]
    return out


def main() -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["arc_easy:rc::olmes", "hellaswag:rc::olmes", "piqa:mc::olmes"],
    )
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="lm-eval hf batch size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    tok = Tokenizer.from_file(ddir / "tokenizers" / "allenai_dolma2.json")
    pairs = requests(args.tasks, ddir, args.limit)
    header(f"log-likelihood requests/s, fp32 CPU, {len(pairs)} requests of {', '.join(args.tasks)}")
    print(
        f"{'size':<6} {'olmo2 req/s':>12} {'lm-eval hf req/s':>17} {'ratio':>6} {'max |dlogp|':>12}"
    )
    for size in args.sizes:
        cfg = replace(
            SIZES[size],
            vocab_size=100352,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            max_seq_len=2048,
        )
        torch.manual_seed(0)
        model = Olmo2.build(cfg).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = save_pretrained(model, Path(tmp) / "ckpt", tokenizer=tok)
            hflm = HFLM(
                pretrained=str(path), batch_size=args.batch_size, device="cpu", dtype="float32"
            )
            inst = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
            ours_out, theirs_out = [], []

            def ours():
                ours_out[:] = Harness(model, tok, progress=False).loglikelihood(pairs)

            def theirs():
                theirs_out[:] = hflm.loglikelihood(inst, disable_tqdm=True)

            t_ours, t_theirs = best_of(ours, args.repeats), best_of(theirs, args.repeats)
            diff = max(abs(a.logprob - b[0]) for a, b in zip(ours_out, theirs_out, strict=True))
        n = len(pairs)
        print(
            f"{size:<6} {n / t_ours:>12.1f} {n / t_theirs:>17.1f} {t_theirs / t_ours:>5.2f}x {diff:>12.2e}"
        )


if __name__ == "__main__":
    main()
