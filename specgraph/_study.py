"""A search over a spec's search space with Optuna: trials decide the draw, a budget prunes before any backend.

Each trial makes the space's decisions through Optuna's suggestions (a categorical per searched level, type,
output and scalar; random keys for a permutation and for parents), so NSGA-II and TPE learn which choices
pay. A draw the validator or the planner refuses, or one outside the budget (parameters and MACs, exact from
``stats``), is a pruned trial, decided before any framework is imported. A finished trial keeps its spec's
TOML, its parameters and MACs as user attributes, so any worker can write the best specs. The study lives in
a storage: a journal file (the default; several processes on one machine share it), SQLite, or a database
server's URL (PostgreSQL: many machines). A run stops when the study holds ``trials`` finished or pruned
trials, so a killed run resumes where it stopped and several workers split the trials.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import ArgumentError, Problem, SpecgraphError
from ._schema import Spec

__all__ = ["OBJECTIVES", "SAMPLERS", "Budget", "Objective", "open_study", "pareto_table", "search", "write_front"]

SAMPLERS = ("nsga2", "tpe", "random")


@dataclass(frozen=True)
class Objective:
    """A metric to optimise: ``name`` (a user attribute of each trial too), ``direction`` (minimize or maximize)
    and ``measure(spec, plan, stats) -> float``."""

    name: str
    direction: str
    measure: Callable[..., float]


# Built in: exact from the plan, no framework.
OBJECTIVES = {
    "params": Objective("params", "minimize", lambda spec, plan, stats: float(stats.params)),
    "macs": Objective("macs", "minimize", lambda spec, plan, stats: float(stats.macs)),
}


def objective(text: str | Objective) -> Objective:
    """``params`` / ``macs``, or ``module:function[:minimize|maximize]`` (a callable ``(spec, plan, stats) ->
    float``, maximised unless said otherwise), as an :class:`Objective`."""
    if isinstance(text, Objective):
        return text
    ArgumentError.expect(text, str, "objective", "an objective name or module:function")
    if text in OBJECTIVES:
        return OBJECTIVES[text]
    module, _, rest = text.partition(":")
    function, _, direction = rest.partition(":")
    direction = direction or "maximize"
    if not module or not function or direction not in ("minimize", "maximize"):
        raise ArgumentError(Problem(f"{text!r}: give params, macs, or module:function[:minimize|maximize]",
                                    "objective"))
    try:
        measure = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ArgumentError(Problem(f"{text!r}: cannot import it ({exc})", "objective")) from None
    return Objective(function, direction, measure)


@dataclass(frozen=True)
class Budget:
    """Limits a candidate must keep to be trained: parameters and MACs (None: no limit)."""

    max_params: int | None = None
    max_macs: int | None = None

    def refuses(self, stats: Any) -> str | None:
        """Why ``stats`` is outside the budget, or None."""
        if self.max_params is not None and stats.params > self.max_params:
            return f"{stats.params:,} parameters > {self.max_params:,}"
        if self.max_macs is not None and stats.macs > self.max_macs:
            return f"{stats.macs:,} MACs > {self.max_macs:,}"
        return None


class _TrialChooser:
    """The draw's decisions as the trial's suggestions."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def choice(self, name: str, options: list[Any]) -> Any:
        return self.trial.suggest_categorical(name, options)

    def permutation(self, name: str, items: list[str]) -> list[str]:
        keys = {item: self.trial.suggest_float(f"{name}.{item}", 0.0, 1.0) for item in items}
        return sorted(items, key=lambda item: (keys[item], items.index(item)))

    def subset(self, name: str, eligible: list[str], k: int) -> list[str]:
        left, picked = list(eligible), []
        for j in range(k):
            u = self.trial.suggest_float(f"{name}.{j}", 0.0, 1.0)
            picked.append(left.pop(min(int(u * len(left)), len(left) - 1)))
        return picked


def _storage(url: str | None, folder: str) -> Any:
    """A journal file (``journal:PATH``; the default ``<folder>/study.journal``), or an RDB URL (``sqlite:///...``,
    ``postgresql://...``), with heartbeats so a killed worker's trial is marked failed."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.startswith("journal:"):
        path = url[len("journal:"):] if url else os.path.join(folder, "study.journal")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    with warnings.catch_warnings():  # Optuna calls heartbeats experimental; they are what makes a kill recoverable
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)


def _sampler(name: str, seed: int | None) -> Any:
    import optuna

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ArgumentError(Problem(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}", "sampler"))


def open_study(space: Spec, objectives: Sequence[str | Objective], *, storage: str | None = None,
               study_name: str | None = None, sampler: str = "nsga2", seed: int | None = 0,
               folder: str = ".") -> Any:
    """The Optuna study of ``space`` (created, or loaded to resume) with one direction per objective."""
    import optuna

    chosen = [objective(o) for o in objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=_storage(storage, folder), study_name=study_name or f"{space.name}-search",
                               sampler=_sampler(sampler, seed), directions=[o.direction for o in chosen],
                               load_if_exists=True)


def search(space: Spec, objectives: Sequence[str | Objective], trials: int, *, storage: str | None = None,
           study_name: str | None = None, sampler: str = "nsga2", seed: int | None = 0, budget: Budget | None = None,
           input_size: tuple[int, int] = (256, 256), folder: str = ".", progress: bool = False) -> Any:
    """Run trials until the study holds ``trials`` finished or pruned ones; returns the Optuna study.

    ``space``: a spec with a ``[search]`` table. ``objectives``: ``params``, ``macs`` or
    ``module:function[:direction]`` (see :func:`objective`). A draw the validator, the planner or the
    ``budget`` refuses is pruned (user attribute ``pruned``: why) before any objective runs."""
    import optuna

    from ._loader import validate_data
    from ._planner import plan
    from ._search import _Reject, base_data
    from ._search import draw as draw_spec
    from ._stats import stats

    ArgumentError.expect(space, Spec, "space", "a Spec with a [search] table (specgraph.load)")
    if space.search is None:
        raise ArgumentError(Problem(f"spec {space.name!r} declares no search space (a [search] table)", "space"))
    ArgumentError.expect(trials, int, "trials", "the number of trials (int)")
    chosen = [objective(o) for o in objectives]
    if not chosen:
        raise ArgumentError(Problem("give at least one objective (params, macs, module:function)", "objectives"))
    study = open_study(space, chosen, storage=storage, study_name=study_name, sampler=sampler, seed=seed,
                       folder=folder)
    variant = space.search.variant or space.variant()[0]
    budget = budget or Budget()

    def run(trial: optuna.Trial) -> tuple[float, ...]:
        name = f"{space.name}-t{trial.number}"
        data = base_data(space, space.search, name, f"trial {trial.number} of the search of {space.name}")
        trial.set_user_attr("worker", os.getpid())
        try:
            spec = validate_data(draw_spec(space, space.search, _TrialChooser(trial), data))
            planned = plan(spec, variant, input_size)
        except (_Reject, SpecgraphError) as exc:
            problems = getattr(exc, "problems", None)
            trial.set_user_attr("pruned", f"invalid: {problems[0] if problems else exc}")
            raise optuna.TrialPruned() from None
        counted = stats(planned)
        trial.set_user_attr("params", counted.params)
        trial.set_user_attr("macs", counted.macs)
        trial.set_user_attr("spec", spec.dumps("toml"))
        refused = budget.refuses(counted)
        if refused is not None:  # before any objective (and any framework) runs
            trial.set_user_attr("pruned", f"budget: {refused}")
            raise optuna.TrialPruned()
        return tuple(float(o.measure(spec, planned, counted)) for o in chosen)

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    left = trials - len(study.get_trials(deepcopy=False, states=done))
    if left > 0:
        study.optimize(run, n_trials=left, callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)],
                       show_progress_bar=progress)
    return study


def pareto_table(study: Any, names: Sequence[str]) -> str:
    """The Pareto front (Optuna's best trials) as a text table: trial, each objective, params, MACs."""
    rows = [("trial", *names, "params", "MACs")]
    for t in sorted(study.best_trials, key=lambda t: t.values):
        rows.append((str(t.number), *(f"{v:,.0f}" if float(v).is_integer() else f"{v:.6g}" for v in t.values),
                     f"{t.user_attrs.get('params', 0):,}",
                     f"{t.user_attrs.get('macs', 0):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows) + "\n"


def write_front(study: Any, folder: str, names: Sequence[str], input_size: tuple[int, int] = (256, 256)
                ) -> list[str]:
    """Write the Pareto front's specs (``<name>.toml``) and drawings (``<name>.svg``) and the front's plot
    (``front.svg``: every finished trial, the front highlighted, first two objectives) into ``folder``."""
    from ._files import write_new
    from ._loader import load
    from ._planner import plan
    from ._render import render_svg

    os.makedirs(folder, exist_ok=True)
    written = []
    for t in study.best_trials:
        text = t.user_attrs.get("spec")
        if text is None:
            continue
        path = os.path.join(folder, f"trial-{t.number}.toml")
        write_new(path, text, True)
        spec = load(path)
        write_new(os.path.join(folder, f"trial-{t.number}.svg"), render_svg(plan(spec, input_size=input_size)), True)
        written += [path, os.path.join(folder, f"trial-{t.number}.svg")]
    write_new(os.path.join(folder, "front.svg"), front_svg(study, names), True)
    written.append(os.path.join(folder, "front.svg"))
    return written


def front_svg(study: Any, names: Sequence[str]) -> str:
    """A scatter of every finished trial on the first two objectives (one: against the trial number), the
    Pareto front in orange and joined by a line."""
    from xml.sax.saxutils import escape

    import optuna

    from ._text import visible

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = {t.number for t in study.best_trials}
    points = [((t.values[0], t.values[1]) if len(t.values) > 1 else (t.number, t.values[0]), t.number in best,
               t.number) for t in done]
    labels = (names[0], names[1]) if len(names) > 1 else ("trial", names[0])
    w, h, pad = 640, 420, 60
    xs = [p[0][0] for p in points] or [0.0]
    ys = [p[0][1] for p in points] or [0.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    def esc(text: str) -> str:
        return escape(visible(text), {'"': "&quot;"})

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             'font-family="DejaVu Sans, sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
             f'<text x="{pad}" y="24" font-size="13" font-weight="bold">{esc(study.study_name)}: {len(done)} '
             f'trials, {len(best)} on the front</text>',
             f'<path d="M{pad},{pad}V{h - pad}H{w - pad}" stroke="#455a64" fill="none"/>',
             f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">{esc(labels[0])} ({x0:,.4g} .. {x1:,.4g})</text>',
             f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">{esc(labels[1])} '
             f'({y0:,.4g} .. {y1:,.4g})</text>']
    front = sorted((p for p in points if p[1]), key=lambda p: p[0])
    if len(front) > 1:
        parts.append('<path class="front" d="' + "".join(
            f"{'M' if i == 0 else 'L'}{at(*p[0])[0]:.1f},{at(*p[0])[1]:.1f}" for i, p in enumerate(front))
            + '" stroke="#ef6c00" fill="none"/>')
    for (x, y), on_front, number in points:
        cx, cy = at(x, y)
        parts.append(f'<circle class="{"front" if on_front else "trial"}" data-trial="{number}" cx="{cx:.1f}" '
                     f'cy="{cy:.1f}" r="{5 if on_front else 3.5}" fill="{"#ef6c00" if on_front else "#90a4ae"}"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
