"""Hyperparameter search of linear ACE fits: searchers, scoring on validation data, outputs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from potlearn_ase.analysis.hyperopt import (
    FloatRange,
    HyperoptConfig,
    IntRange,
    SearchSpace,
    _planned,
    hyperopt,
    pareto_front,
    run_hyperopt,
)
from potlearn_ase.cli.analysis import add_hyperopt_subparser
from potlearn_ase.config import from_mapping
from potlearn_ase.data.io import write
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models import LinearFitConfig, fit_linear

SPACE = SearchSpace(
    cutoff=(4.0, 4.5), n_radial=IntRange(3, 4), l_max=(1, 2),
    energy_weight=FloatRange(1.0, 100.0, log=True), force_weight=(1.0, 3.0),
)


@pytest.fixture(scope="module")
def data(cu_train, cu_test):
    return list(cu_train[::3]), list(cu_test[::3])


@pytest.mark.parametrize("method", ["grid", "random", "lhs", "tpe"])
def test_every_searcher_stays_in_the_space(data, method):
    train, val = data
    cfg = HyperoptConfig(method=method, n_trials=4, space=SPACE, timing_repeats=1, n_members=4)
    res = hyperopt(train, val, cfg)
    assert len(res.trials) == 4
    for t in res.trials:
        p = t.params
        assert p["cutoff"] in (4.0, 4.5) and 3 <= p["n_radial"] <= 4 and p["l_max"] in (1, 2)
        assert 1.0 <= p["energy_weight"] <= 100.0 and p["force_weight"] in (1.0, 3.0)
        assert 0 < t.force_rmse < 0.2 and 0 < t.energy_rmse < 0.05 and t.cost_us_per_atom > 0
        assert t.error == pytest.approx(t.force_rmse + 10.0 * t.energy_rmse)
    assert res.best.loss == min(t.loss for t in res.trials)


@pytest.mark.parametrize(
    "lam, stress_weight", [(1e-4, 1.0), ("evidence", 1.0), ("evidence", 0.0)]
)
def test_trial_scores_equal_a_direct_fit(data, lam, stress_weight):
    """The cached, split normal equations give the fit that fit_linear gives, also with the
    ridge parameter by evidence (which counts the rows) and a zero-weight part left out."""
    train, val = data
    space = SearchSpace(cutoff=(4.5,), n_radial=(4,), l_max=(2,), energy_weight=(7.0,),
                        force_weight=(2.0,), lam=(lam,))
    res = hyperopt(train, val, HyperoptConfig(method="grid", n_trials=1, space=space,
                                               timing_repeats=1, n_members=4,
                                               stress_weight=stress_weight))
    t = res.trials[0]
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=2))
    model = fit_linear(desc, train, LinearFitConfig(energy_weight=7.0, force_weight=2.0,
                                                    stress_weight=stress_weight, lam=lam,
                                                    n_members=4), rng=0)
    F = np.concatenate([model.predict(a)["forces"].mean(0) - a.get_forces() for a in val])
    assert t.force_rmse == pytest.approx(float(np.sqrt(np.mean(F**2))), rel=1e-6)


def test_latin_hypercube_stratifies_and_grid_enumerates():
    space = SearchSpace(cutoff=FloatRange(4.0, 6.0), n_radial=(4,), l_max=(2,),
                        energy_weight=(1.0,), force_weight=(1.0,))
    plan = _planned(HyperoptConfig(method="lhs", n_trials=8, space=space),
                    np.random.default_rng(0))
    strata = np.floor((np.array([p["cutoff"] for p in plan]) - 4.0) / 2.0 * 8).astype(int)
    assert sorted(strata) == list(range(8))
    grid = _planned(HyperoptConfig(method="grid", n_trials=100, space=SPACE, grid_points=3),
                    np.random.default_rng(0))
    assert len(grid) == 2 * 2 * 2 * 3 * 2
    assert len({tuple(sorted(g.items())) for g in grid}) == len(grid)


def test_pareto_front():
    cost = [1.0, 2.0, 3.0, 1.5, 4.0]
    err = [5.0, 3.0, 1.0, 6.0, 1.0]
    assert pareto_front(cost, err) == [0, 1, 2]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="space.cutof"):
        from_mapping(HyperoptConfig, {"space": {"cutof": [4.0]}})
    with pytest.raises(ConfigError, match="method"):
        from_mapping(HyperoptConfig, {"method": "annealing"})
    with pytest.raises(ConfigError, match="train"):
        run_hyperopt({"val": "v.xyz"})
    with pytest.raises(ConfigError, match="lam: 'evidnce' is neither"):
        from_mapping(HyperoptConfig, {"space": {"lam": ["evidnce"]}})
    with pytest.raises(ConfigError, match="unknown key space.energy_weight.lgo"):
        from_mapping(HyperoptConfig, {"space": {"energy_weight": {"low": 1, "high": 9, "lgo": 1}}})
    for key, bad in (("grid_points", 0), ("timing_repeats", 0), ("n_members", 0),
                     ("cost_weight", -1.0)):
        with pytest.raises(ConfigError, match=key):
            from_mapping(HyperoptConfig, {key: bad})


def test_cli_writes_table_and_pareto_plot(data, tmp_path, capsys):
    train, val = data
    write(tmp_path / "train.xyz", train)
    write(tmp_path / "val.xyz", val)
    (tmp_path / "h.yaml").write_text(
        f"train: {tmp_path / 'train.xyz'}\nval: {tmp_path / 'val.xyz'}\n"
        "method: lhs\nn_trials: 3\ncost_weight: 1.0e-4\ntiming_repeats: 1\nn_members: 4\n"
        "space:\n  cutoff: {low: 4.0, high: 4.5}\n  n_radial: [3, 4]\n  l_max: [1]\n"
        "  energy_weight: {low: 1.0, high: 50.0, log: true}\n"
    )
    parser = argparse.ArgumentParser()
    add_hyperopt_subparser(parser.add_subparsers())
    args = parser.parse_args(["hyperopt", str(tmp_path / "h.yaml"), "--output-dir",
                              str(tmp_path / "out"), "--quiet"])
    assert args.func(args) == 0
    assert "best (lowest loss)" in capsys.readouterr().out
    table = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert len(table["trials"]) == 3 and table["method"] == "lhs"
    assert all(t["loss"] == pytest.approx(t["error"] + 1e-4 * t["cost_us_per_atom"])
               for t in table["trials"])
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 5_000


def _counting(monkeypatch, stop_after=None, sleep=0.0):
    """Count the trials the objective runs; raise KeyboardInterrupt (a kill) after
    ``stop_after`` of them."""
    import time

    from potlearn_ase.analysis import hyperopt as ho

    calls = []
    original = ho._Objective.__call__

    def call(self, number, params):
        if stop_after is not None and len(calls) >= stop_after:
            raise KeyboardInterrupt
        calls.append(number)
        time.sleep(sleep)
        return original(self, number, params)

    monkeypatch.setattr(ho._Objective, "__call__", call)
    return calls


def _search(tmp_path, data, **kw):
    train, val = data
    write(tmp_path / "train.xyz", train)
    write(tmp_path / "val.xyz", val)
    cfg = dict(train=str(tmp_path / "train.xyz"), val=str(tmp_path / "val.xyz"), n_trials=4,
               timing_repeats=1, n_members=4,
               space={"cutoff": [4.0, 4.5], "n_radial": [3, 4], "l_max": [1],
                      "energy_weight": {"low": 1.0, "high": 50.0, "log": True}})
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("method", ["lhs", "tpe"])
def test_killed_search_keeps_finished_trials_and_resumes_without_redoing_them(
    data, tmp_path, monkeypatch, method
):
    cfg = _search(tmp_path, data, method=method)
    out = tmp_path / "out"
    calls = _counting(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_hyperopt(cfg, output_dir=out)
    lines = [json.loads(s) for s in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["search", "trial", "trial"]
    assert calls == [0, 1] and not (out / "trials.json").exists()
    with open(out / "trials.jsonl", "a") as fh:  # killed while writing a third line
        fh.write('{"kind": "trial", "number": 2, "par')
    with pytest.raises(ConfigError, match="--resume"):
        run_hyperopt(cfg, output_dir=out)
    with pytest.raises(ConfigError, match="'seed'"):
        run_hyperopt({**cfg, "seed": 5}, output_dir=out, resume=True)
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    res = run_hyperopt(cfg, output_dir=out, resume=True)
    assert calls == [2, 3]  # only the trials that had not finished
    assert [t.number for t in res.trials] == [0, 1, 2, 3]
    assert [r["params"] for r in lines[1:]] == [t.params for t in res.trials[:2]]
    records = [json.loads(s) for s in (out / "trials.jsonl").read_text().splitlines()]
    assert [r.get("number") for r in records] == [None, 0, 1, 2, 3]
    if method == "lhs":  # a planned search resumed equals the search never killed
        whole = run_hyperopt(cfg, output_dir=tmp_path / "whole")
        assert [t.params for t in whole.trials] == [t.params for t in res.trials]
        assert [t.force_rmse for t in whole.trials] == pytest.approx(
            [t.force_rmse for t in res.trials], rel=1e-9)


def test_time_budget_stops_the_search_and_the_table_names_units(
    data, tmp_path, monkeypatch, capsys
):
    cfg = _search(tmp_path, data, method="random", n_trials=50)
    (tmp_path / "h.yaml").write_text(json.dumps(cfg))
    assert from_mapping(HyperoptConfig, {**cfg, "time_budget_s": 2.5}).time_budget_s == 2.5
    with pytest.raises(ConfigError, match="time_budget_s"):
        from_mapping(HyperoptConfig, {**cfg, "time_budget_s": 0})
    calls = _counting(monkeypatch, sleep=0.5)
    parser = argparse.ArgumentParser()
    add_hyperopt_subparser(parser.add_subparsers())
    args = parser.parse_args(["hyperopt", str(tmp_path / "h.yaml"), "--output-dir",
                              str(tmp_path / "out"), "-q", "--time-budget", "1.0"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    # every trial takes at least 0.5 s: no more than two start inside 1 s
    assert 1 <= len(calls) <= 2
    assert "stopped by the time budget" in text
    for unit in ("(eV/A)", "(meV/at)", "(us/at)", "E RMSE (eV/atom)"):
        assert unit in text
    table = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert table["stopped"] == "time_budget" and len(table["trials"]) == len(calls)
    assert table["units"]["force_rmse"] == "eV/A"
