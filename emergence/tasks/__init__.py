"""Generated tasks: a registry and the built-in tasks (the mixture that feeds the trainer is `emergence.data.TaskMixture`).

    from emergence.tasks import get_task
    from emergence.data import TaskMixture
    task = get_task("add3")
    prompts, answers = task.sample(np.random.default_rng(0), 4, "train")    # token ids of VOCAB
    prompts, answers, ids = task.heldout_set(512, seed=1234)               # the fixed probe set
    x, y = TaskMixture({"add2": 1.0, "recall": 1.0}, seq_len=32).batch(seed=0, step=0, batch_size=64)

Adding a task: write a file in this package with a `Task` subclass (set name, description, answer_format, example,
prompt_len, answer_len; implement `sample_prompts` and `solve`), then add one `register(...)` line below. Any
registered task X also has k-shot variants, `get_task("X", shots=k)`, built on demand (their rows are labelled
"X_<k>shot"; nothing parses that label back).
"""
from __future__ import annotations

import numpy as np

from .arithmetic import Addition, Modular, Multiplication
from .base import ENUMERATE_LIMIT, HELDOUT_FRACTION, SPLITS, IndexedTask, Task, join_examples
from .dyck import Dyck
from .kshot import KShot
from .parity import Parity
from .recall import Recall, TwoHop
from .strings import Copy, Reverse, Sort
from .vocab import VOCAB, Vocab

TASKS: dict[str, Task] = {}
_derived: dict[tuple[str, int], Task] = {}  # k-shot variants built by get_task, kept so each is built once


def register(task: Task) -> Task:
    """Add a task to the registry under its name (checked: sizes, and its documented example against its solver)."""
    if not isinstance(task, Task):
        raise ValueError(f"register() takes a Task instance, got {type(task).__name__}")
    task.check()
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    """Names of the registered tasks, in registration order (k-shot variants of them exist too; see get_task)."""
    return list(TASKS)


def get_task(name: str, shots: int = 0) -> Task:
    """The registered task called `name`, or with `shots` = k > 0 its k-shot variant (k solved training examples
    before each query, `KShot`). A registered task that is a k-shot variant already (add2_2shot) is returned as it
    is, whatever `shots` says: variants nest no further."""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 0:
        raise ValueError(f"shots must be a non-negative whole number of solved examples, got {shots!r}")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (a k-shot variant is asked for "
                         "by number, probe.shots=K, never in the task's name)")
    task = TASKS[name]
    if shots == 0 or isinstance(task, KShot):
        return task
    key = (str(name), int(shots))
    if key not in _derived:
        variant = KShot(task, int(shots))
        variant.check()
        _derived[key] = variant
    return _derived[key]


# --- the built-in tasks: one line each ---------------------------------------------------------------------------
for _k in range(1, 6):
    register(Addition(_k))
register(Multiplication(2))
register(Modular(97))
register(Copy())
register(Reverse())
register(Sort())
register(Parity())
register(Recall())
register(TwoHop())
register(Dyck())
register(KShot(TASKS["add2"], 2))

__all__ = ["VOCAB", "Vocab", "Task", "IndexedTask", "TASKS", "register", "get_task", "list_tasks",
           "KShot", "HELDOUT_FRACTION", "ENUMERATE_LIMIT", "SPLITS", "join_examples"]
