"""`specgraph search` on Optuna: trials draw specs from the space, record exact costs, resume, share a study
between workers, and prune by budget before any framework is imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import optuna
import pytest

import specgraph
from specgraph._study import Budget, search

DATA = Path(__file__).parent / "data"
SIZE = (256, 256)
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def space() -> specgraph.Spec:
    return specgraph.load("spinenet_space")


def _study(storage: str, name: str = "spinenet_space-search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)) if not storage.startswith("sqlite") else storage)


def _trials(study: optuna.Study) -> dict[int, tuple]:
    """Finished trials by number: (state, values, the spec's text)."""
    return {t.number: (t.state, t.values, t.user_attrs.get("spec")) for t in study.get_trials(states=DONE)}


def test_each_trial_is_a_spec_of_the_space_with_its_exact_costs(tmp_path: Path, space) -> None:
    study = search(space, ["params", "macs"], 12, storage=f"journal:{tmp_path / 's.journal'}", folder=str(tmp_path))
    done = study.get_trials(states=DONE)
    assert len(done) == 12
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 8
    for t in complete:
        spec = specgraph.load(_written(tmp_path, t))
        counted = specgraph.stats(specgraph.plan(spec, input_size=SIZE))
        assert t.values == [float(counted.params), float(counted.macs)]
        assert (t.user_attrs["params"], t.user_attrs["macs"]) == (counted.params, counted.macs)
    assert len({t.user_attrs["spec"].split("\n", 2)[2] for t in complete}) == len(complete)  # different networks


def _written(folder: Path, trial: optuna.trial.FrozenTrial) -> Path:
    path = folder / f"t{trial.number}.toml"
    path.write_text(trial.user_attrs["spec"], encoding="utf-8")
    return path


def test_a_search_resumes_its_study_without_rerunning_finished_trials(tmp_path: Path, space) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _trials(search(space, ["params"], 6, storage=storage, folder=str(tmp_path)))
    assert len(first) == 6
    again = _trials(search(space, ["params"], 10, storage=storage, folder=str(tmp_path)))
    assert len(again) == 10 and {n: again[n] for n in first} == first


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DATA), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "specgraph.cli", "search", "spinenet_space", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_workers_split_the_trials_of_one_study(tmp_path: Path) -> None:
    run = _cli("--trials", "16", "--workers", "2", "--objective", "search_objectives:slow_params:minimize",
               "--out", str(tmp_path))
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    study = _study(str(tmp_path / "study.journal"))
    done = study.get_trials(states=DONE)
    assert len(done) >= 16 and len({t.number for t in study.trials}) == len(study.trials)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials


def _finished(journal: Path) -> int:
    """Finished trials in a journal another process is writing (0 until its study is in it)."""
    try:
        return len(_trials(_study(str(journal))))
    except (KeyError, ValueError, FileNotFoundError):  # no study yet, or a record half written
        return 0


def test_a_killed_search_resumes_from_its_store(tmp_path: Path) -> None:
    args = ("--trials", "14", "--objective", "search_objectives:slow_params:minimize", "--out", str(tmp_path))
    run = _cli(*args)
    journal = tmp_path / "study.journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if _finished(journal) >= 4:
            break
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    before = _trials(_study(str(journal)))
    assert 4 <= len(before) < 14
    resumed = _cli(*args)
    _out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    after = _trials(_study(str(journal)))
    assert len(after) == 14 and {n: after[n] for n in before} == before


def test_a_budget_that_excludes_every_candidate_never_imports_a_framework(tmp_path: Path) -> None:
    script = f"""
import json, sys
sys.path.insert(0, {str(DATA)!r})
import specgraph
from specgraph._study import Budget, search
study = search(specgraph.load("spinenet_space"), ["search_objectives:torch_params:minimize"], 8,
               storage="journal:{tmp_path / 'b.journal'}", budget=Budget(max_params=1000), folder={str(tmp_path)!r})
print(json.dumps({{"states": [t.state.name for t in study.trials],
                  "why": [t.user_attrs.get("pruned", "") for t in study.trials],
                  "imported": sorted(m for m in ("torch", "specgraph_torch", "tensorflow") if m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["states"] == ["PRUNED"] * 8 and report["imported"] == []
    assert all(why.startswith(("budget: ", "invalid: ")) for why in report["why"])
    assert any(why.startswith("budget: ") and "parameters > 1,000" in why for why in report["why"])


def test_the_command_line_writes_the_front_its_specs_and_drawings(tmp_path: Path) -> None:
    run = _cli("--trials", "12", "--max-params", "100000000", "--out", str(tmp_path))
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert out.splitlines()[0].split() == ["trial", "params", "macs", "params", "MACs"]
    study = _study(str(tmp_path / "study.journal"))
    best = {t.number for t in study.best_trials}
    assert {p.stem for p in tmp_path.glob("trial-*.toml")} == {f"trial-{n}" for n in best}
    for n in best:
        specgraph.plan(specgraph.load(tmp_path / f"trial-{n}.toml"), input_size=SIZE)
        ElementTree.parse(tmp_path / f"trial-{n}.svg")
    front = ElementTree.parse(tmp_path / "front.svg").getroot()
    circles = [c for c in front.iter("{http://www.w3.org/2000/svg}circle")]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(circles) == len(complete)
    assert {int(c.get("data-trial")) for c in circles if c.get("class") == "front"} == best
    with pytest.raises(specgraph.ArgumentError, match="declares no search space"):
        search(specgraph.load("spinenet"), ["params"], 1, folder=str(tmp_path))
    assert Budget(max_macs=5).refuses(specgraph.stats(specgraph.plan("spinenet", "49S", SIZE))).endswith("MACs > 5")
