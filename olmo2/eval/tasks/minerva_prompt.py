r"""The four MATH exemplars of Minerva (Lewkowycz et al. 2022, "Solving Quantitative
Reasoning Problems with Language Models", Appendix D.2), used by OLMES `Minerva:MATH` and
lm-eval `minerva_math`. Each solution ends with the Minerva answer line
"Final Answer: The final answer is X. I hope it is correct." that the checkers extract.
The typographic quirks of the original (two spaces and a stray "}" in the first problem)
are kept on purpose.
"""

MINERVA_SHOTS: list[tuple[str, str]] = [
    (
        r"Find the domain of the expression  $\frac{\sqrt{x-2}}{\sqrt{5-x}}$.}",
        r"The expressions inside each square root must be non-negative. Therefore, "
        r"$x-2 \ge 0$, so $x\ge2$, and $5 - x \ge 0$, so $x \le 5$. Also, the denominator "
        r"cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of "
        r"the expression is $\boxed{[2,5)}$."
        "\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        r"If $\det \mathbf{A} = 2$ and $\det \mathbf{B} = 12,$ then find "
        r"$\det (\mathbf{A} \mathbf{B}).$",
        r"We have that $\det (\mathbf{A} \mathbf{B}) = (\det \mathbf{A})(\det \mathbf{B}) "
        r"= (2)(12) = \boxed{24}.$"
        "\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound "
        "weights instead, how many times must Terrell lift them in order to lift the same "
        "total weight?",
        r"If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
        r"$2\cdot 12\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead "
        r"for $n$ times, he will lift a total of $2\cdot15\cdot n=30n$ pounds of weight.  "
        r"Equating this to 480 pounds, we can solve for $n$:"
        "\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n"
        "\\end{align*}"
        "\nFinal Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n"
        "\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\n"
        r"find $\frac{a}{b},$ assuming $b$ is nonzero.",
        r"If we multiply the first equation by $-\frac{3}{2}$, we obtain"
        "\n\n"
        r"$$6y-9x=-\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have"
        "\n\n"
        r"$$-\frac{3}{2}a=b\Rightarrow\frac{a}{b}=\boxed{-\frac{2}{3}}.$$"
        "\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
]
