"""Verifiable answer checkers shared by evaluation (OLMES tasks) and RLVR rewards.

- GSM8K (Cobbe et al. 2021): the answer is the number after "answer is" (the 8-shot CoT
  exemplars end "So the answer is N."), else the last number in the completion, as in OLMES
  `gsm8k.py` and open-instruct's `GSM8KVerifier` (thousands commas removed first). We use
  the sign-aware number regex of current open-instruct, so "-5" extracts as -5 (the OLMo 2-era
  regex attached the sign only to decimals). Numbers compare after normalisation ("3.0" == "3").
- MATH (Hendrycks et al. 2021) with OLMES "flex" matching: candidates are the Minerva answer
  ("Final Answer: The final answer is X. I hope it is correct.", Lewkowycz et al. 2022) and
  the last ``\\boxed{}``/``\\fbox{}``; if neither exists, the text between the last two ``$``,
  else the whole output. A candidate is correct when its normalised string equals the
  normalised gold answer, or when both parse as sympy expressions that agree numerically.
  Gold answers and completions are normalised with the Minerva `normalize_final_answer`
  rules (Lewkowycz et al. 2022, App. D) followed by the Hendrycks `strip_string` clean-up
  (``\\dfrac``→``\\frac``, ``\\left``/``\\right``, ``a/b``→``\\frac{a}{b}``, ...).
- IFEval: `olmo2.eval.ifeval`.

`score_by_dataset` routes an RLVR row (``dataset`` field as in open-instruct's
`rlvr_tokenize_v1`) to the right checker: 1.0/0.0 for GSM8K and MATH; for IFEval the fraction
of satisfied instructions (strict), as open-instruct's `IFEvalVerifier` averages over
constraints (the same 1/0 as its old verifier for the usual single-constraint rows).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import signal
import threading
import time
import warnings
from decimal import Decimal, InvalidOperation

from olmo2.eval.ifeval import ifeval_score

logger = logging.getLogger(__name__)

__all__ = [
    "gsm8k_extract",
    "gsm8k_ground_truth",
    "gsm8k_score",
    "ifeval_score",
    "math_candidates",
    "math_equal",
    "math_extract",
    "math_normalize",
    "math_score",
    "score_by_dataset",
]

# ---- GSM8K ----------------------------------------------------------------------------------
_NUMBER = r"[-+]?(?:\d*\.\d+|\d+)"
_ANSWER_IS = re.compile(r"answer is[\s:*$]*(" + _NUMBER + ")", re.IGNORECASE)


def _strip_thousands(text: str) -> str:
    # (\d),(\d) -> \1\2, applied until stable so "1,234,567" collapses fully.
    prev = None
    while prev != text:
        prev, text = text, re.sub(r"(\d),(\d)", r"\1\2", text)
    return text


def normalize_number(s: str) -> str:
    """Canonical string for a number: no sign '+', no trailing zeros ("3.0" -> "3",
    "-0.50" -> "-0.5"); non-numbers come back stripped and unchanged."""
    s = _strip_thousands(str(s).strip()).lstrip("$").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return s
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def gsm8k_extract(text: str) -> str | None:
    """The predicted answer of a GSM8K completion: the number after the last "answer is",
    else the last number anywhere; normalised, or None when the text has no number."""
    text = _strip_thousands(text)
    found = _ANSWER_IS.findall(text)
    if not found:
        found = re.findall(_NUMBER, text)
    return normalize_number(found[-1]) if found else None


def gsm8k_ground_truth(answer_field: str) -> str:
    """The gold answer of a GSM8K row: the text after ``####``, commas removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer field has no '####' marker: {answer_field[-80:]!r}")
    return normalize_number(answer_field.split("####")[-1].strip().replace(",", ""))


def gsm8k_score(completion: str, ground_truth) -> float:
    """1.0 when the extracted answer equals the ground truth (a number or its string)."""
    pred = gsm8k_extract(completion)
    return float(pred is not None and pred == normalize_number(str(ground_truth)))


# ---- MATH: extraction -----------------------------------------------------------------------
_MINERVA = re.compile(r"Final Answer: The final answer is(.*?)\. I hope it is correct\.", re.S)


def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at text[start] == '{' and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed) or
    of ``\\boxed X`` (the space form, up to the next ``$``)."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest = text[idx:]
    m = re.match(r"\\(?:boxed|fbox)\s*", rest)
    after = idx + m.end()
    if after < len(text) and text[after] == "{":
        got = _balanced(text, after)
        return got[0] if got else None
    if rest.startswith("\\boxed "):
        return text[after:].split("$")[0].strip() or None
    return None


def math_extract(text: str) -> str | None:
    """The answer a MATH completion commits to: the Minerva "Final Answer: The final answer
    is X. I hope it is correct." (last occurrence) if present, else the last boxed answer;
    returned raw (un-normalised), or None."""
    found = _MINERVA.findall(text)
    if found:
        return found[-1].strip()
    return last_boxed(text)


def math_candidates(text: str) -> list[str]:
    """All answers OLMES "flex" matching tries, normalised: Minerva answer and last boxed
    answer; else the text between the last two ``$``; else the whole output."""
    out = []
    found = _MINERVA.findall(text)
    if found:
        out.append(math_normalize(found[-1]))
    boxed = last_boxed(text)
    if boxed is not None:
        out.append(math_normalize(boxed))
    if not out:
        dollars = [m.start() for m in re.finditer(r"\$", text)]
        if len(dollars) > 1:
            out.append(math_normalize(text[dollars[-2] + 1 : dollars[-1]]))
    if not out:
        out.append(math_normalize(text))
    return out


# ---- MATH: normalisation --------------------------------------------------------------------
# Lewkowycz et al. 2022, App. D: substitutions, then unit/filler words removed verbatim.
_SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
    ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]  # fmt: skip
_REMOVED = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
    "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
]  # fmt: skip


def _minerva_normalize(ans: str) -> str:
    ans = ans.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        ans = ans.replace(before, after)
    for word in _REMOVED:
        ans = ans.replace(word, "")
    ans = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", r"$\3$", ans)  # keep the first $...$ span
    for cmd in ("text", "textbf", "overline"):
        ans = re.sub(r"(\\" + cmd + r"\{)(.*?)(\})", r"\2", ans)
    ans = re.sub(r"(\\boxed\{)(.*)(\})", r"\2", ans)
    ans = re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", ans)  # \frac12 -> \frac{1}{2}
    ans = re.sub(r"(sqrt)([^{[])", r"sqrt{\2}", ans)  # \sqrt2 -> \sqrt{2} (not \sqrt[3])
    ans = ans.replace("$", "")
    if ans.replace(",", "").isdigit():
        ans = ans.replace(",", "")
    return ans


def math_normalize(s: str) -> str:
    """Normalise a MATH answer for string comparison (see the module docstring).

    ``\\left``/``\\right``, ``\\displaystyle`` and ``\\!`` are removed before the Minerva word
    list runs, so its removal of "ft" cannot turn ``\\left`` into ``\\le``."""
    s = str(s).strip().replace("\n", " ")
    s = re.sub(r"\\(left|right)\b\s*", "", s)
    s = s.replace("\\displaystyle", "").replace("\\!", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = _minerva_normalize(s)
    # Minerva's "\ " -> "" eats one backslash of a spaced row break "\\ "; collapse
    # "\\" to "\" afterwards (Hendrycks `strip_string` does) so both spellings agree.
    s = s.replace("\\\\", "\\")
    s = s.replace("\\%", "").replace("%", "").replace("^\\circ", "").replace("^{\\circ}", "")
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)  # ".5" -> "0.5"
    s = re.sub(r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}", s)  # "1/2" -> "\frac{1}{2}"
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)  # "3.00" -> "3"
    return s.strip()


# ---- MATH: symbolic equivalence -------------------------------------------------------------
_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "arcsin", "arccos"}
_SYMBOLS = {"pi": "pi", "infty": "oo", "cdot": "*", "times": "*", "div": "/"}
_MAX_LEN = 200  # longer answers are compared as strings only (keeps sympy cheap and safe)


def _group(s: str, i: int) -> tuple[str, int]:
    """Argument of a LaTeX command at s[i]: a brace group or a single character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise ValueError("missing argument")
    if s[i] == "{":
        got = _balanced(s, i)
        if got is None:
            raise ValueError("unbalanced braces")
        return got
    return s[i], i + 1


def latex_to_expr(s: str) -> str:
    """Translate a small LaTeX subset (fractions, roots, powers, pi, trig/log functions,
    implicit products) to sympy syntax; ValueError for anything else (\\text, sets, ...)."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            m = re.match(r"\\([a-zA-Z]+)", s[i:])
            if not m:
                raise ValueError(f"unsupported LaTeX at {s[i:]!r}")
            name, i = m.group(1), i + m.end()
            if name == "frac":
                num, i = _group(s, i)
                den, i = _group(s, i)
                out.append(f"(({latex_to_expr(num)})/({latex_to_expr(den)}))")
            elif name == "sqrt":
                root = None
                if i < len(s) and s[i] == "[":
                    j = s.index("]", i)
                    root, i = s[i + 1 : j], j + 1
                arg, i = _group(s, i)
                arg = latex_to_expr(arg)
                out.append(f"(({arg})**(1/({latex_to_expr(root)})))" if root else f"sqrt({arg})")
            elif name in _SYMBOLS:
                out.append(f" {_SYMBOLS[name]} ")
            elif name in _FUNCS:
                out.append(f" {'log' if name == 'ln' else name}")
            else:
                raise ValueError(f"unsupported LaTeX command \\{name}")
        elif c in "{}":
            out.append("(" if c == "{" else ")")
            i += 1
        elif c == "^":
            out.append("**")
            i += 1
        elif re.match(r"[0-9a-zA-Z.+\-*/() !]", c):
            out.append(c)
            i += 1
        else:
            raise ValueError(f"unsupported character {c!r}")
    return "".join(out)


def _parse(s: str):
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    expr = latex_to_expr(s)
    if "_" in expr:  # no dunder access through parse_expr's eval
        raise ValueError("underscores are not allowed")
    if re.search(r"(\d{4,}|\))\s*!", expr):  # sympy evaluates n! while parsing
        raise ValueError("factorial too large")
    names = ("Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow", "sqrt", "pi", "oo")
    safe = {"__builtins__": {}} | {n: getattr(sympy, n) for n in names}
    safe |= {f: getattr(sympy, f) for f in ("sin", "cos", "tan", "cot", "sec", "csc", "log")}
    safe |= {
        "exp": sympy.exp,
        "arcsin": sympy.asin,
        "arccos": sympy.acos,
        "factorial": sympy.factorial,
    }
    transforms = standard_transformations + (implicit_multiplication_application, convert_xor)
    tree = parse_expr(expr, global_dict=safe, transformations=transforms, evaluate=False)
    _check_cost(tree)
    return tree


def _check_cost(tree) -> None:
    """Refuse expressions whose evaluation could run for minutes inside one C call (which
    no signal can interrupt): power towers, exponents or factorials above 1000."""
    import sympy

    for node in sympy.preorder_traversal(tree):
        if isinstance(node, sympy.Pow):
            if node.exp.is_Number and abs(node.exp) > 1000:
                raise ValueError("exponent too large")
            inner = [p for p in sympy.preorder_traversal(node.exp) if isinstance(p, sympy.Pow)]
            if any(p.exp != -1 for p in inner):  # x**(1/2) is fine, 2**(10**10) is not
                raise ValueError("power tower")
        if isinstance(node, sympy.factorial) and node.args[0].is_Number and node.args[0] > 1000:
            raise ValueError("factorial too large")


def _numerically_equal(a, b) -> bool:
    import sympy

    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    points = [{}] if not syms else [
        {x: sympy.Rational(3 + 2 * k + j, 7 + k) for j, x in enumerate(syms)} for k in range(3)
    ]  # fmt: skip
    for pt in points:
        va, vb = complex(sympy.N(a.subs(pt))), complex(sympy.N(b.subs(pt)))
        if abs(va - vb) > 1e-6 * max(1.0, abs(va), abs(vb)):
            return False
    return True


class _Timeout(Exception):
    pass


def _with_timeout(fn, seconds: float):
    """Run fn() under a SIGALRM timeout when on the main thread (sympy has no timeouts of
    its own); elsewhere run it directly: the input length and cost checks bound the work.
    An outer alarm (pytest-timeout's, say) is re-armed with its remaining time afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return fn()

    def _raise(signum, frame):
        raise _Timeout

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, _raise)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer > 0 else seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def _sympy_equal(a: str, b: str, timeout: float = 5.0) -> bool:
    if len(a) > _MAX_LEN or len(b) > _MAX_LEN:
        return False
    try:
        with warnings.catch_warnings():  # sympy deprecation chatter on tuple-like input
            warnings.simplefilter("ignore")
            return bool(_with_timeout(lambda: _numerically_equal(_parse(a), _parse(b)), timeout))
    except _Timeout:
        logger.debug("sympy timed out comparing %r and %r", a, b)
        return False
    except Exception:  # noqa: BLE001 - any parse/eval failure means "not provably equal"
        return False


def _split_top(s: str) -> list[str]:
    """Split at commas outside (), [], {}."""
    parts, depth, cur = [], 0, ""
    for c in s:
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    return parts + [cur]


def _equal_normalized(a: str, b: str) -> bool:
    if a == b:
        return True
    if "\\cup" in a or "\\cup" in b:  # unions of intervals: piecewise, in order
        pa, pb = a.split("\\cup"), b.split("\\cup")
        return len(pa) == len(pb) and all(map(_equal_normalized, pa, pb))
    # tuples / intervals: same brackets, element-wise
    if len(a) > 1 and len(b) > 1 and a[0] in "([" and b[0] in "([" and a[-1] in ")]":
        if (a[0], a[-1]) == (b[0], b[-1]):
            ea, eb = _split_top(a[1:-1]), _split_top(b[1:-1])
            if len(ea) > 1 and len(ea) == len(eb):
                return all(map(_equal_normalized, ea, eb))
    ea, eb = _split_top(a), _split_top(b)
    if len(ea) > 1 and len(ea) == len(eb):  # unbracketed lists (e.g. all roots): any order
        rest = list(eb)
        for x in ea:
            j = next((j for j, y in enumerate(rest) if _equal_normalized(x, y)), None)
            if j is None:
                return False
            rest.pop(j)
        return True
    return _sympy_equal(a, b)


def math_equal(a: str, b: str) -> bool:
    """Flex equivalence of two MATH answers: equal after `math_normalize`, or equal as sympy
    expressions (numerically, at a few rational points when symbols occur), element-wise
    for tuples/intervals."""
    return _equal_normalized(math_normalize(a), math_normalize(b))


def math_score(completion: str, ground_truth: str) -> float:
    """1.0 when any flex candidate of the completion is `math_equal` to the gold answer."""
    gold = math_normalize(ground_truth)
    return float(any(_equal_normalized(c, gold) for c in math_candidates(completion)))


# ---- dispatch -------------------------------------------------------------------------------
def _ifeval_reward(completion: str, ground_truth) -> float:
    gt = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(gt, dict) or "instruction_id_list" not in gt:
        raise ValueError(
            "ifeval ground_truth must be a dict (or JSON) with 'instruction_id_list' and "
            f"'kwargs', got {str(ground_truth)[:120]!r}"
        )
    # Reasoning traces are not part of the answer (open-instruct strips them, too).
    completion = re.sub(r"<think>.*?</think>", "", completion, flags=re.S)
    completion = completion.replace("<answer>", "").replace("</answer>", "")
    ids = gt["instruction_id_list"]
    kwargs = gt.get("kwargs") or [{}] * len(ids)
    per = ifeval_score(completion, ids, kwargs, strict=True)["instruction_level"]
    return sum(per) / len(per) if per else 0.0


_SCORERS = {"gsm8k": gsm8k_score, "math": math_score, "ifeval": _ifeval_reward}


def score_by_dataset(dataset: str, completion: str, ground_truth) -> float:
    """Verifier score in [0, 1] for an RLVR row: routes on ``dataset`` ("gsm8k", "math",
    "ifeval"; case-insensitive). See the module docstring for what each returns."""
    fn = _SCORERS.get(str(dataset).strip().lower())
    if fn is None:
        close = difflib.get_close_matches(str(dataset).lower(), _SCORERS, n=2, cutoff=0.4)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(_SCORERS)}{hint}")
    return fn(completion, ground_truth)
