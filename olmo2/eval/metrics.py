"""Evaluation metrics: OLMES multiple-choice normalisations, best-of MC/RC, suite averages,
SQuAD F1/EM/recall, PopQA containment, pass@k, TruthfulQA MC1/MC2 and bits per byte (DROP's
F1 is in `olmo2.eval.drop_eval`).

Multiple-choice normalisations (OLMES `MCAccuracy`, allenai/olmes oe_eval/metrics/metric.py;
Gu et al. 2024 §3): a choice's score is the summed log-probability of its continuation,

* `acc_raw`       argmax of Σ log p
* `acc_per_token` argmax of Σ log p / number of continuation tokens
* `acc_per_char`  argmax of Σ log p / number of characters of the scored continuation
* `acc_per_byte`  argmax of Σ log p / number of UTF-8 bytes (= lowest bits per byte)
* `acc_uncond`    argmax of Σ log p(c | prompt) − Σ log p(c | "Answer:") (PMI)

Ties go to the first choice (numpy argmax), as in OLMES. The character count is that of the
continuation string as scored, leading space included.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

LN2 = math.log(2)


def _argmax(x: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(x, dtype=np.float64)))


def mc_doc_metrics(
    logprobs: Sequence[float],
    num_tokens: Sequence[int],
    continuations: Sequence[str],
    gold: int,
    uncond_logprobs: Sequence[float] | None = None,
) -> dict[str, float]:
    """0/1 accuracies of one document under every normalisation, plus the gold answer's
    bits per byte (`bits_per_byte_corr`)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    chars = np.array([len(c) for c in continuations], dtype=np.float64)
    nbytes = np.array([len(c.encode("utf-8")) for c in continuations], dtype=np.float64)
    out = {
        "acc_raw": float(_argmax(lp) == gold),
        "acc_per_token": float(_argmax(lp / np.maximum(np.asarray(num_tokens), 1)) == gold),
        "acc_per_char": float(_argmax(lp / np.maximum(chars, 1)) == gold),
        "acc_per_byte": float(_argmax(lp / np.maximum(nbytes, 1)) == gold),
        "bits_per_byte_corr": float(-lp[gold] / (max(nbytes[gold], 1) * LN2)),
    }
    if uncond_logprobs is not None:
        out["acc_uncond"] = float(_argmax(lp - np.asarray(uncond_logprobs)) == gold)
    return out


def mean_metrics(per_doc: list[dict[str, float]]) -> dict[str, float]:
    """Average every metric over the documents that report it."""
    sums: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    for d in per_doc:
        for k, v in d.items():
            sums[k] += v
            counts[k] += 1
    return {k: sums[k] / counts[k] for k in sums}


def score_multiple_choice(docs, requests, results) -> dict[str, float]:
    """Group (request, result) pairs by document and average `mc_doc_metrics`."""
    from olmo2.eval.formats import UNCOND_DOC_OFFSET

    cond: dict[int, dict[int, tuple]] = defaultdict(dict)
    unc: dict[int, dict[int, float]] = defaultdict(dict)
    for req, res in zip(requests, results, strict=True):
        if req.doc_id >= UNCOND_DOC_OFFSET:
            unc[req.doc_id - UNCOND_DOC_OFFSET][req.idx] = res.logprob
        else:
            cond[req.doc_id][req.idx] = (res.logprob, res.num_tokens, req.continuation)
    per_doc = []
    for doc_id, doc in enumerate(docs):
        n = len(doc.choices)
        lp, nt, cont = zip(*(cond[doc_id][i] for i in range(n)), strict=True)
        u = [unc[doc_id][i] for i in range(n)] if doc_id in unc else None
        per_doc.append(mc_doc_metrics(lp, nt, cont, doc.gold, u))
    out = mean_metrics(per_doc)
    out["num_docs"] = len(docs)
    return out


def best_of(scores: dict[str, float]) -> tuple[str, float]:
    """OLMES `mc_or_rc`: the formulation with the higher primary score, and that score."""
    name = max(scores, key=lambda k: scores[k])
    return name, scores[name]


def macro_average(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def micro_average(values: Sequence[float], counts: Sequence[int]) -> float:
    """Document-weighted mean (OLMES `micro`, e.g. BBH over its 27 subtasks)."""
    total = sum(counts)
    return float(sum(v * n for v, n in zip(values, counts, strict=True)) / total)


# ---- SQuAD-style answer matching (Rajpurkar et al. 2016, official evaluate-v1.1 rules) ----
def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-overlap F1 against any gold answer."""
    pt = normalize_answer(prediction).split()
    best = 0.0
    for g in golds:
        gt = normalize_answer(g).split()
        common = sum((Counter(pt) & Counter(gt)).values())
        if not pt or not gt:
            best = max(best, float(pt == gt))
        elif common:
            prec, rec = common / len(pt), common / len(gt)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def recall(prediction: str, golds: Sequence[str]) -> float:
    """1 if any gold answer, lower-cased, occurs in the lower-cased prediction (OLMES
    `SQuADF1EMRecallMetric`, allenai/olmes oe_eval/metrics/metric.py)."""
    p = prediction.lower()
    return float(any(g.lower() in p for g in golds))


def qa_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """The generative-QA metrics of OLMES (TriviaQA, SQuAD, Jeopardy, CoQA, NaturalQs): SQuAD
    F1 and exact match (max over golds) and `recall`, on the stripped generation."""
    p = prediction.strip()
    return {"f1": f1(p, golds), "exact_match": exact_match(p, golds), "recall": recall(p, golds)}


def contains_answer(generation: str, aliases: Sequence[str]) -> float:
    """PopQA's "exact match" (Mallen et al. 2023; OLMES popqa.py): 1 if any alias, as is,
    lower-cased or capitalised, is a substring of the generation."""
    return float(
        any(
            a in generation or a.lower() in generation or a.capitalize() in generation
            for a in aliases
        )
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021, eq. 1) for n samples of which c pass:
    1 − C(n−c, k) / C(n, k), computed as 1 − Π_{i=n−c+1}^{n} (1 − k/i) (openai/human-eval
    human_eval/evaluation.py `estimate_pass_at_k`); 1 when n − c < k."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# ---- TruthfulQA (Lin et al. 2022, §4.1 "MC1" and "MC2") ---------------------------------
def truthfulqa_mc1(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """1 if the single true answer has the highest log-likelihood."""
    return float(labels[_argmax(logprobs)] == 1)


def truthfulqa_mc2(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """Normalised probability mass on the true answers: Σ_true p / Σ_all p."""
    lp = np.asarray(logprobs, dtype=np.float64)
    p = np.exp(lp - lp.max())
    return float(p[np.asarray(labels) == 1].sum() / p.sum())


def bits_per_byte(nll_nats: float, num_bytes: int) -> float:
    """−Σ log p / (bytes · ln 2): tokenizer-independent (Paloma; OLMES perplexity.py)."""
    return nll_nats / (num_bytes * LN2)
