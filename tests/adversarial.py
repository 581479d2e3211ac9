"""Hostile "answers" for the verifier: the tests' corpus and the throughput benchmark's mix.

Each entry is (category, gold, completion). Injections write to `canary` if anything ever
executes them, so a test can prove that nothing did.
"""

from __future__ import annotations

from pathlib import Path

CATEGORIES = ("injection", "tower", "nesting", "huge", "lookalike", "malformed")


def corpus(canary: Path) -> list[tuple[str, str, str]]:
    c = str(canary)
    touch = f"__import__('os').system('touch {c}')"
    injections = [
        touch,
        f"(lambda: __import__('os').system('touch {c}'))()",
        f"lambda x: open('{c}', 'w')",
        f"eval(\"open('{c}', 'w').close()\")",
        f"exec('import os; os.system(\"touch {c}\")')",
        f"\\text{{{touch}}}",
        f"\\operatorname{{eval}}({touch})",
        f"\\mathrm{{exec}}('open(\"{c}\",\"w\")')",
        f"getattr(__builtins__, 'exec')('open(\"{c}\", \"w\")')",
        f"().__class__.__bases__[0].__subclasses__()[0]('{c}')",
        f"x = {touch}",
        f"\\frac{{{touch}}}{{2}}",
        f"Symbol('x').__init__.__globals__['os'].system('touch {c}')",
        f"$${touch}$$",
        f"{touch} \\\\ 42",
    ]
    towers = [
        r"9^{9^{9}}",
        r"9^{9^{9^{9}}}",
        r"2^{2^{2^{2^{2^{2}}}}}",
        r"10^{10^{10}}!",
        r"(10^{100})!",
        r"99999999999^{99999999999}",
        r"\prod_{k=1}^{10^{9}} k",
        r"\sum_{i=1}^{10^{12}} i^{i}",
        "2^" * 300 + "2",
        r"e^{e^{e^{e^{e}}}}",
    ]
    n = 10_000
    nesting = [
        "{" * n + "1" + "}" * n,
        "(" * n + "1" + ")" * n,
        "\\frac{" * n + "1" + "}{2}" * n,
        "\\sqrt{" * n + "2" + "}" * n,
        "[" * n + "1" + "]" * n,
        "-" * 900 + "1",  # a deep unary chain that is short enough to reach the parser
    ]
    huge = [
        "1" * 1_000_000,
        "1+" * 500_000 + "1",
        "x" * 1_000_000,
        "\\frac{1}{2}" * 100_000,
    ]
    lookalikes = [
        "４２",  # fullwidth digits
        "٤٢",  # Arabic-Indic digits
        "\u22127",  # U+2212 minus sign
        "\u20137",  # en dash
        "\uff0d7",  # fullwidth hyphen-minus
        "\u0445^2+1",  # Cyrillic x
        "4\u200b2",  # zero-width space inside the number
        "\u202e24",  # right-to-left override: shows as 42
        "\u0031\u0662",  # 1 then Arabic-Indic 2
    ]
    lookalike_golds = ["42", "42", "-7", "-7", "-7", "x^2+1", "42", "42", "12"]
    malformed = [
        r"\frac{1}{",
        r"\frac{1}",
        r"\left( 1",
        r"\begin{matrix} 1 & 2",
        r"\sqrt[",
        r"^^^^",
        "\\\\\\\\\\",
        r"$$$$",
        r"\frac}{1}{2",
        r"1 \over \over 2",
        r"\undefinedmacro{3}",
        r"\text{",
        r"_{_{_{}}}",
        r"\end{array}",
    ]
    out = [("injection", "1", f"\\boxed{{{s}}}") for s in injections]
    out += [("tower", "1", f"\\boxed{{{s}}}") for s in towers]
    out += [("nesting", "1", f"\\boxed{{{s}}}") for s in nesting]
    out += [("huge", "1", f"\\boxed{{{s}}}") for s in huge]
    out += [("lookalike", g, f"\\boxed{{{s}}}") for g, s in zip(lookalike_golds, lookalikes,
                                                                 strict=True)]
    out += [("malformed", "7", f"\\boxed{{{s}}}") for s in malformed]
    return out


def format_corpus(canary: Path) -> list[tuple[str, str, str]]:
    """(verify.format, gold, completion): hostile text for each answer format but boxed's
    (``corpus``): megabytes of digits, 100k markers or tags, unclosed tags, deep nesting and
    injections where the format passes text on. What the formats read is a number at most,
    or text that math-verify sees: never correct for gold 7."""
    touch = f"__import__('os').system('touch {canary}')"
    n = 100_000
    digits = "1" * 1_000_000
    deep = "(" * 10_000 + "1" + ")" * 10_000
    return [
        ("gsm8k", "7", "####" * n),
        ("gsm8k", "7", "#### 1\n" * n),
        ("gsm8k", "7", "#### " + digits),
        ("gsm8k", "7", "#### " + "{" * 10_000),
        ("gsm8k", "7", "#### " + deep),
        ("gsm8k", "7", f"#### {touch}"),
        ("gsm8k", "7", r"#### 9^{9^{9}}"),
        ("answer-tag", "7", "<answer>" * n),
        ("answer-tag", "7", "</answer>" * n),
        ("answer-tag", "7", "<answer>1</answer><answer>" + digits),
        ("answer-tag", "7", f"<answer>{deep}</answer>"),
        ("answer-tag", "7", f"<answer>{touch}</answer>"),
        ("answer-tag", "7", r"<answer>9^{9^{9}}</answer>"),
        ("last-number", "7", digits),
        ("last-number", "7", "1," * 500_000),
        ("last-number", "7", "-" * 1_000_000),
        ("last-number", "7", "answer is " * n),
        ("last-number", "7", "answer" + ":" * 1_000_000 + "x"),
        ("last-number", "7", "1e" * 500_000),
        ("last-number", "7", ".1" * 500_000),
        ("last-number", "7", "\u22121" * 300_000),
        ("auto", "7", "\\boxed{" * n + "####" * n + "<answer>" * n + "1" * n),
        ("auto", "7", "<answer>" * n + "1/" * n),
        ("auto", "7", f"#### {touch}\n" + digits),
    ]
