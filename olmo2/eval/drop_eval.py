"""DROP's official answer metric (Dua et al. 2019): exact match and a bag-of-words F1 that
aligns predicted and gold spans one to one and requires matching numbers.

A port of allennlp-reading-comprehension `drop_eval.py` (`get_metrics`), as OLMES runs it
(allenai/olmes oe_eval/dependencies/drop/process_results.py, EleutherAI lm-evaluation-harness
lm_eval/tasks/drop/utils.py):

* A span is normalised token by token (split on spaces and hyphens): lower-case; punctuation
  removed unless the token parses as a float; numbers rewritten as `str(float(x))` ("2.0");
  the articles a/an/the dropped; white space folded. Empty tokens go.
* EM: the sets of normalised spans are equal and the span lists are equally long.
* F1: a gold × predicted matrix of bag F1 (an empty bag has precision / recall 1), a cell
  zeroed unless the predicted bag shares a number with a gold bag that has numbers, the
  best one-to-one assignment (scipy's `linear_sum_assignment` upstream, exact search here),
  averaged over max(#gold, #pred) slots and rounded to 2 decimals.
* A document scores the max over its non-empty gold answers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCT)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def normalize_span(text: str) -> str:
    parts = [_normalize_token(t) for t in re.split(" |-", text)]
    return " ".join(p for p in parts if p.strip()).strip()


def _bags(spans: Sequence[str]) -> tuple[list[str], list[set[str]]]:
    normalized = [normalize_span(s) for s in spans]
    return normalized, [set(s.split()) for s in normalized]


def _bag_f1(pred: set[str], gold: set[str]) -> float:
    common = len(gold & pred)
    precision = common / len(pred) if pred else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], pred: set[str]) -> bool:
    gold_numbers = {w for w in gold if _is_number(w)}
    return not gold_numbers or bool(gold_numbers & {w for w in pred if _is_number(w)})


def best_assignment_total(scores: list[list[float]]) -> float:
    """The largest sum of a one-to-one matching of rows to columns (each used at most once):
    what `scipy.optimize.linear_sum_assignment(-scores)` maximises. Exact search over subsets
    of the smaller side, fine for the handful of spans an answer has."""
    if not scores or not scores[0]:
        return 0.0
    if len(scores) > len(scores[0]):
        scores = [list(col) for col in zip(*scores, strict=True)]
    best: dict[int, float] = {0: 0.0}  # mask of used columns -> best total so far
    for row in scores:
        nxt: dict[int, float] = {}
        for mask, total in best.items():
            for j, s in enumerate(row):
                if not mask >> j & 1:
                    key = mask | 1 << j
                    nxt[key] = max(nxt.get(key, float("-inf")), total + s)
        best = nxt
    return max(best.values())


def span_metrics(predicted: Sequence[str], gold: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one predicted span list against one gold span list."""
    pred_spans, pred_bags = _bags(predicted)
    gold_spans, gold_bags = _bags(gold)
    em = float(set(pred_spans) == set(gold_spans) and len(pred_spans) == len(gold_spans))
    matrix = [
        [_bag_f1(p, g) if _numbers_match(g, p) else 0.0 for p in pred_bags] for g in gold_bags
    ]
    f1 = best_assignment_total(matrix) / max(len(gold_bags), len(pred_bags))
    return em, round(f1, 2)


def drop_score(prediction: str | Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """`exact_match` and `f1`, each the max over the non-empty gold answers (span tuples)."""
    pred = [prediction] if isinstance(prediction, str) else list(prediction)
    em = f1 = 0.0
    for gold in golds:
        if gold and gold[0].strip():
            e, f = span_metrics(pred, gold)
            em, f1 = max(em, e), max(f1, f)
    return {"exact_match": em, "f1": f1}


def gold_answers(doc: dict) -> list[tuple[str, ...]]:
    """The gold answers of an `EleutherAI/drop` row: `answer` then each `validated_answers`
    entry, as span tuples (a number, else the spans, else "day month year"), deduplicated in
    order (lm-eval drop/utils.py `get_answers` / `parse_answer`)."""
    va = doc.get("validated_answers") or {"number": [], "date": [], "spans": []}
    candidates = [doc["answer"]] + [
        {"number": n, "date": d, "spans": s}
        for n, d, s in zip(va["number"], va["date"], va["spans"], strict=True)
    ]
    out: list[tuple[str, ...]] = []
    for c in candidates:
        if c["number"] != "":
            ans: tuple[str, ...] = (str(c["number"]),)
        elif c["spans"]:
            ans = tuple(c["spans"])
        else:
            d = c["date"]
            ans = (" ".join([d["day"], d["month"], d["year"]]).strip(),)
        if ans not in out:
            out.append(ans)
    return out
