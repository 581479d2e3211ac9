"""The built-in task's programmatic critic, and the wrong attempts that teach its format.

The task knows its own steps (every reference line is ``x op y = z``), so a chain-of-thought
critique of a wrong solution can be exact: it names the first wrong step, what it should
have been and why, tersely, since a refinement prompt (question, previous solution,
critique) must fit the tiny model's 256-token context (Critique-GRPO's CoT critique,
specs/algorithms-a.md §3.2; there a strong LM writes it).
"""

from __future__ import annotations

import random

from cotflow.data.arithmetic import check_step, equation, reasoning_lines, solution_steps

Step = tuple[int, str, int, int]


def _fmt(step: Step) -> str:
    x, op, y, z = step
    return f"{x}{op}{y}={z}"


def _reference(solution: str) -> list[Step]:
    steps = [equation(line) for line in solution_steps(solution)]
    if not steps or any(s is None for s in steps):
        raise ValueError(f"reference solution {solution!r} is not all 'x op y = z' lines")
    return steps  # type: ignore[return-value]


def step_critique(response: str, solution: str, answer: str) -> str:
    """A terse critique of `response` against the reference `solution`: its first wrong
    step, what it should have been and why; else (every step right) the missing answer."""
    want = _reference(solution)
    got = reasoning_lines(response)
    for i, ref in enumerate(want, 1):
        if i > len(got):
            return f"Step {i} is missing: {_fmt(ref)}."
        line = got[i - 1]
        eq = equation(line)
        if eq is None:
            return f"Step {i} should be {_fmt(ref)}."
        if check_step(line) is False:
            x, op, y, _ = eq
            return f"Step {i}: {x}{op}{y}={_value(x, op, y)}, not {eq[3]}."
        if eq[0] != ref[0]:
            why = f"start from {ref[0]}" if i == 1 else f"step {i - 1} gave {ref[0]}"
            return f"Step {i} should be {_fmt(ref)}: {why}."
        if eq[1:3] != ref[1:3]:
            return f"Step {i} should be {_fmt(ref)}: next is {ref[1]}{ref[2]}."
    return f"Steps are right; the answer is \\boxed{{{answer}}}."


def _value(x: int, op: str, y: int) -> str:
    if op == "+":
        return str(x + y)
    if op == "-":
        return str(x - y)
    if op == "*":
        return str(x * y)
    return str(x // y) if y and x % y == 0 else f"{x}/{y}"


def wrong_attempt(solution: str, rng: random.Random) -> str:
    """A plausible wrong solution: one step of `solution` goes wrong (its arithmetic, its
    carried value, or its operand) and the later steps carry the error on, as a model's do."""
    steps = list(_reference(solution))
    k = rng.randrange(len(steps))
    x, op, y, z = steps[k]
    kind = rng.choice(("arithmetic", "operand", "carry") if k else ("arithmetic", "operand"))
    delta = rng.choice((-2, -1, 1, 2))
    if kind == "arithmetic":
        steps[k] = (x, op, y, z + delta if z + delta >= 0 else z + 1)
    else:
        if kind == "operand":
            y = y + delta if y + delta > 0 else y + 3
        else:
            x = x + delta if x + delta >= 0 else x + 3
        steps[k] = (x, op, y, int(_value(x, op, y)) if op != "/" else z)
    acc = steps[k][3]
    for j in range(k + 1, len(steps)):
        _, op, y, _ = steps[j]
        steps[j] = (acc, op, y, int(_value(acc, op, y)))
        acc = steps[j][3]
    return "\n".join([_fmt(s) for s in steps] + [f"\\boxed{{{acc}}}"])


def teaching_pairs(problems: list[dict], count: int, *, seed: int, refinement_template: str,
                   self_template: str, wording: str) -> list[tuple[str, str]]:
    """(prompt, target) pairs that teach a warm start to read critiques: `count` refinement
    examples (a wrong attempt, its critique, the right solution), the critique types
    indicative, indicative_gt and cot in turn, and count // 3 self-critique examples (a
    wrong attempt -> its cot critique and the marker), drawn from `problems`."""
    from cotflow.critiques import MARKER, fill, indicative, indicative_gt

    if count < 0:
        raise ValueError(f"refinement examples: count {count} must be >= 0")
    if count and not problems:
        raise ValueError("refinement examples need problems with worked solutions")
    rng = random.Random(f"{seed}/refinement-examples")
    out = []
    for i in range(count + count // 3):
        p = problems[rng.randrange(len(problems))]
        attempt = wrong_attempt(p["solution"], rng)
        cot = step_critique(attempt, p["solution"], p["answer"])
        if i >= count:
            out.append((fill(self_template, "critique.self_template", question=p["question"],
                             previous=attempt), f" {cot} {MARKER}"))
            continue
        critique = (indicative(False, wording), indicative_gt(False, p["answer"], wording),
                    cot)[i % 3]
        out.append((fill(refinement_template, "critique.refinement_template",
                         question=p["question"], previous=attempt, critique=critique),
                    p["solution"]))
    return out
