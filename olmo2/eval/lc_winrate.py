"""AlpacaEval 2's length-controlled win rate (Dubois et al. 2024, "Length-Controlled
AlpacaEval"; tatsu-lab/alpaca_eval src/alpaca_eval/metrics/glm_winrate.py,
`GLM_INFO["length_controlled_v1"]`).

A logistic model of the judge's preference y_i ∈ [0, 1] (1 = the model's output wins):

    logit P(model wins) = θ_len · tanh(Δ_i / std(Δ)) + θ_diff · difficulty_i + θ_base

where Δ_i = len(baseline output) − len(model output) in characters. The length-controlled
win rate is the model's predicted win rate with the length term removed:

    LC = 100 · mean_i σ(θ_diff · difficulty_i + θ_base)

Soft labels are fitted as in AlpacaEval, each row counted as a win with weight y and a loss
with weight 1 − y. Departures, stated plainly: AlpacaEval fits with `LogisticRegressionCV`
(L1, 5-fold) and regularises towards two "gamed" baselines whose annotations, like the
per-instruction `instruction_difficulty`, ship as data files with AlpacaEval; here the fit is
the maximum-likelihood one (Newton's method, with a 1e-6 ridge for stability), difficulty is
read from `eval/alpaca_eval/instruction_difficulty.csv` when that file is in the data
directory and left out otherwise (then LC = σ(θ_base)), and no gamed baselines are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RIDGE = 1e-6


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def features(
    model_lengths: Sequence[int], baseline_lengths: Sequence[int], difficulty=None
) -> np.ndarray:
    """Rows of [tanh(std Δ), difficulty?, 1]; std with ddof=1 as pandas' `.std()`."""
    delta = np.asarray(baseline_lengths, dtype=np.float64) - np.asarray(
        model_lengths, dtype=np.float64
    )
    std = delta.std(ddof=1) if len(delta) > 1 else 0.0
    cols = [np.tanh(delta / std) if std > 0 else np.zeros_like(delta)]
    if difficulty is not None:
        cols.append(np.asarray(difficulty, dtype=np.float64))
    cols.append(np.ones_like(delta))
    return np.stack(cols, axis=1)


def fit_logistic(X: np.ndarray, y: np.ndarray, iters: int = 100) -> np.ndarray:
    """θ maximising Σ_i y_i log σ(x_i θ) + (1 − y_i) log(1 − σ(x_i θ)) − RIDGE/2 ‖θ‖²."""
    theta = np.zeros(X.shape[1])
    for _ in range(iters):
        p = sigmoid(X @ theta)
        grad = X.T @ (y - p) - RIDGE * theta
        hess = (X * (p * (1 - p))[:, None]).T @ X + RIDGE * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    return theta


def length_controlled(
    preferences: Sequence[float],
    model_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    difficulty: Sequence[float] | None = None,
) -> dict[str, float]:
    """`length_controlled_winrate`, its standard error, the raw and discrete win rates (all
    in percent) and the fitted coefficients, from y = preference of the model's output."""
    y = np.asarray(preferences, dtype=np.float64)
    if len(y) == 0:
        nan = float("nan")
        return {"length_controlled_winrate": nan, "lc_standard_error": nan, "win_rate": nan,
                "discrete_win_rate": nan}  # fmt: skip
    X = features(model_lengths, baseline_lengths, difficulty)
    theta = fit_logistic(X, y)
    X0 = X.copy()
    X0[:, 0] = 0.0  # the length term removed
    pred = sigmoid(X0 @ theta)
    sem = pred.std(ddof=1) / math.sqrt(len(pred)) if len(pred) > 1 else 0.0
    out = {
        "length_controlled_winrate": 100 * float(pred.mean()),
        "lc_standard_error": 100 * float(sem),
        "win_rate": 100 * float(y.mean()),
        "discrete_win_rate": 100
        * float(np.mean(np.where(y > 0.5, 1.0, np.where(y < 0.5, 0.0, 0.5)))),
        "theta_length": float(theta[0]),
        "theta_base": float(theta[-1]),
    }
    if difficulty is not None:
        out["theta_difficulty"] = float(theta[1])
    return out
