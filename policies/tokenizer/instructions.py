"""The task instructions the project's tokenizer is trained on, generated from templates.

The SentencePiece model in assets/ is trained offline on exactly this corpus (`python -m
policies.tokenizer.train`), so the vocabulary covers every phrasing the tasks and experts use. The
instruction each task is run with is task data (robots/tasks/tasks.py) and always part of the corpus. New
tasks add their templates here and retrain; the shipped model's hash then changes, which every exported
policy records in its metadata.
"""

from __future__ import annotations

import itertools

from robots.tasks.tasks import TASK_INSTRUCTIONS

COLOURS = ("red", "green", "blue")
OBJECTS = ("object", "block", "cube")

# (task, templates); {a} and {b} are colours, {o} an object noun.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": (
        "reach the {a} {o}",
        "move the gripper to the {a} {o}",
        "touch the {a} {o}",
        "go to the {a} {o}",
    ),
    "lift": (
        "lift the {a} {o}",
        "pick up the {a} {o}",
        "grasp the {a} {o} and lift it",
        "raise the {a} {o} off the table",
    ),
    "stack": (
        "stack the {a} {o} on the {b} {o}",
        "put the {a} {o} on top of the {b} {o}",
        "place the {a} {o} on the {b} one",
        "stack {a} on {b}",
    ),
}


def corpus() -> list[str]:
    """Every instruction phrasing, sorted and without duplicates."""
    lines = set(TASK_INSTRUCTIONS.values())
    for templates in TEMPLATES.values():
        for template, (a, b), o in itertools.product(templates, itertools.permutations(COLOURS, 2), OBJECTS):
            lines.add(template.format(a=a, b=b, o=o))
    return sorted(lines)
