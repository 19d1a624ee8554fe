"""The learning study's report (benchmarks/learning_study.py): the table, results.json and plots it makes from
the files its runs leave, here written by hand for two algorithms at two sizes."""

import argparse
import json

import pytest

from benchmarks.learning_study import algo_settings, report, trainer_command

PARAMETERS = {"XS": 1.5e6, "S": 2.0e7}


def _run(root, algo, size, seed, successes, episodes, held_out_bc, command=""):
    run = root / "runs" / f"{algo}_{size}_s{seed}"
    (run / "eval" / "step_100").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps(
            {
                "train": {"algo": algo, "seed": seed, "size": size},
                "model": {"target_parameters": PARAMETERS[size]},
                "dataset": {"success_rate": 0.3},
                "command": command,
            }
        )
    )
    (run / "metrics.csv").write_text(f"step,held_out/bc,held_out/td\n50,{held_out_bc + 1},\n100,{held_out_bc},\n")
    summary = {"episodes": episodes, "successes": successes, "success_rate": successes / episodes}
    (run / "eval" / "step_100" / "summary.json").write_text(json.dumps(summary))


def test_one_size_pools_seeds_per_algorithm_and_draws_no_scaling_plot(tmp_path, capsys):
    _run(tmp_path, "pac", "XS", 0, 30, 100, 5.0)
    _run(tmp_path, "pac", "XS", 1, 50, 100, 6.0)
    _run(tmp_path, "bc", "XS", 0, 10, 100, 5.5)
    summary = report(argparse.Namespace(out=tmp_path))
    assert set(summary) == {"pac", "bc"}
    assert summary["pac"]["successes"] == 80 and summary["pac"]["episodes"] == 200 and summary["pac"]["seeds"] == 2
    assert summary["pac"]["held_out_bc"] == pytest.approx(5.5)  # the mean over seeds of each run's last value
    lo, hi = summary["pac"]["interval"]
    assert lo < 0.4 < hi
    assert "| PAC | XS | 2 | 200 | 0.400 |" in capsys.readouterr().out
    assert (tmp_path / "success.png").is_file() and (tmp_path / "curves.png").is_file()
    assert not (tmp_path / "scaling.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["data_rate"] == 0.3


def test_a_run_still_starting_is_left_out_not_a_crash(tmp_path, capsys):
    _run(tmp_path, "pac", "XS", 0, 30, 100, 5.0)
    (tmp_path / "runs" / "pac_XS_s1").mkdir()  # its trainer has made the folder, not yet run.json
    summary = report(argparse.Namespace(out=tmp_path))
    assert summary["pac"]["seeds"] == 1 and summary["pac"]["episodes"] == 100


def test_several_sizes_give_one_row_per_algorithm_and_size_and_a_scaling_plot(tmp_path, capsys):
    for size, bc_loss, wins in (("XS", 5.5, 20), ("S", 5.0, 40)):
        _run(tmp_path, "pac", size, 0, wins, 100, bc_loss)
        _run(tmp_path, "filtered_bc", size, 0, wins + 5, 100, bc_loss - 0.2)
    summary = report(argparse.Namespace(out=tmp_path))
    assert set(summary) == {"pac@XS", "pac@S", "filtered_bc@XS", "filtered_bc@S"}
    assert summary["pac@S"]["rate"] == 0.4 and summary["pac@S"]["parameters"] == PARAMETERS["S"]
    table = capsys.readouterr().out
    assert table.index("| PAC | XS |") < table.index("| PAC | S |")  # smaller first
    assert (tmp_path / "scaling.png").is_file()


def test_a_variant_set_for_one_algorithm_is_named_under_the_table(tmp_path, capsys):
    """Settings every run shares are the study's recipe; those only PAC's runs have make it a variant, said so."""
    shared = "pac-train --size XS --set reward=shaped --set n_step=20"
    _run(tmp_path, "pac", "XS", 0, 30, 100, 5.0, shared + " --set alpha_gripper=0.25")
    _run(tmp_path, "bc", "XS", 0, 10, 100, 5.5, shared)
    summary = report(argparse.Namespace(out=tmp_path))
    out = capsys.readouterr().out
    assert "PAC ran with alpha_gripper=0.25" in out and "BC ran with" not in out
    assert summary["pac"]["settings"] == ["alpha_gripper=0.25"] and "settings" not in summary["bc"]


def test_a_setting_only_some_seeds_had_names_those_seeds_and_a_key_set_twice_counts_once(tmp_path, capsys):
    """Seeds trained elsewhere (a GPU's amp=none) are named, not folded into the algorithm's recipe; a key set twice
    on one command line took its last value."""
    shared = "pac-train --size XS --set checkpoint_every=6000 --set reward=shaped --set checkpoint_every=2000"
    _run(tmp_path, "bc", "XS", 0, 10, 100, 5.5, shared)
    _run(tmp_path, "bc", "XS", 1, 12, 100, 5.5, shared + " --set amp=none")
    _run(tmp_path, "pac", "XS", 0, 30, 100, 5.0, "pac-train --size XS --set reward=shaped --set checkpoint_every=2000")
    summary = report(argparse.Namespace(out=tmp_path))
    out = capsys.readouterr().out
    assert "BC seeds 1 (only) ran with amp=none" in out
    assert "checkpoint_every" not in out and "BC ran with" not in out and "settings" not in summary["bc"]


def test_set_for_groups_settings_by_algorithm_and_refuses_a_malformed_item():
    got = algo_settings(["pac:alpha=1.0", "pac:alpha_gripper=0.25", "bc_q:eta=0.3"], _raise)
    assert got == {"pac": ["alpha=1.0", "alpha_gripper=0.25"], "bc_q": ["eta=0.3"]}
    for bad in ("alpha=1.0", "dqn:alpha=1.0", "pac:alpha"):
        with pytest.raises(ValueError, match="ALGO:KEY=VALUE"):
            algo_settings([bad], _raise)


def test_nproc_trains_through_torchrun_standalone_and_one_process_runs_pac_train_directly():
    assert trainer_command(1)[1:] == ["-m", "policies.train.cli"]
    two = trainer_command(2)
    assert two[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert two[-2:] == ["-m", "policies.train.cli"]
    with pytest.raises(ValueError, match="at least 1"):
        trainer_command(0)


def _raise(message):
    raise ValueError(message)


def test_runs_kept_in_the_repository_layout_report_like_the_studys_own(tmp_path, capsys):
    """benchmarks/results keeps a run's evaluations as eval_<step>_summary.json beside run.json: the same table."""
    _run(tmp_path, "pac", "XS", 0, 30, 100, 5.0)
    kept = tmp_path / "runs" / "bc_XS_s0"
    _run(tmp_path, "bc", "XS", 0, 10, 100, 5.5)
    (kept / "eval" / "step_100" / "summary.json").rename(kept / "eval_100_summary.json")
    (kept / "eval" / "step_100").rmdir()
    early = {"episodes": 20, "successes": 1, "success_rate": 0.05}
    (kept / "eval_50_summary.json").write_text(json.dumps(early))
    summary = report(argparse.Namespace(out=tmp_path))
    assert summary["bc"]["successes"] == 10 and summary["bc"]["episodes"] == 100  # the last step is the final one
    assert "| BC | XS | 1 | 100 | 0.100 |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["algo"]: r["steps"] for r in rows} == {"pac": 100, "bc": 100}


def _pooled(**rates_and_seeds):
    """summary rows as report() pools them: algo=(rate, seeds)."""
    return {a: {"algo": a, "rate": r, "seeds": n} for a, (r, n) in rates_and_seeds.items()}


@pytest.mark.parametrize(
    ("rows", "holds"),
    [
        # (PAC, BC, filtered BC, BC+Q) -> above data, twice BC, at or above filtered BC, BC+Q reported
        (dict(pac=(0.55, 3), bc=(0.17, 3), filtered_bc=(0.50, 3), bc_q=(0.2, 3)), [True, True, True, True]),
        (dict(pac=(0.30, 3), bc=(0.10, 3), filtered_bc=(0.20, 3), bc_q=(0.2, 3)), [False, True, True, True]),
        (dict(pac=(0.55, 3), bc=(0.30, 3), filtered_bc=(0.50, 3), bc_q=(0.2, 3)), [True, False, True, True]),
        (dict(pac=(0.55, 3), bc=(0.17, 3), filtered_bc=(0.56, 3)), [True, True, False, None]),
        (dict(pac=(0.60, 3), bc=(0.30, 3), filtered_bc=(0.60, 3), bc_q=(0.2, 3)), [True, True, True, True]),  # ties
        # fewer than three seeds on a side: that comparison is not judged, whatever the rates
        (dict(pac=(0.90, 2), bc=(0.10, 3), filtered_bc=(0.82, 1)), [None, None, None, None]),
        (dict(pac=(0.90, 3), bc=(0.10, 3), filtered_bc=(0.82, 1)), [True, True, None, None]),
        (dict(pac=(0.90, 3), filtered_bc=(0.82, 3)), [True, None, True, None]),
        # twice a fully seeded BC above 1: out of reach, however PAC's seeds end; under 1 it waits for PAC's seeds
        (dict(pac=(0.90, 2), bc=(0.56, 3), filtered_bc=(0.86, 3)), [None, False, None, None]),
        (dict(pac=(0.90, 2), bc=(0.50, 3), filtered_bc=(0.86, 3)), [None, None, None, None]),
        (dict(pac=(0.90, 3), bc=(0.56, 2), filtered_bc=(0.86, 3)), [True, None, True, None]),
    ],
)
def test_the_bar_judges_each_criterion_only_on_three_seeds_a_side(rows, holds):
    from benchmarks.learning_study import the_bar

    bar = the_bar(_pooled(**rows), data_rate=0.308)
    assert [c["holds"] for c in bar] == holds
    assert "PAC" in bar[0]["figures"] and "0.308" in bar[0]["figures"]


def test_the_report_prints_and_keeps_the_bar(tmp_path, capsys):
    for seed in range(3):
        _run(tmp_path, "pac", "XS", seed, 60, 100, 5.0)
        _run(tmp_path, "bc", "XS", seed, 20, 100, 5.0)
    _run(tmp_path, "filtered_bc", "XS", 0, 50, 100, 5.0)
    report(argparse.Namespace(out=tmp_path))
    out = capsys.readouterr().out
    assert "met      PAC above the data's own success: PAC 0.600 (3 seeds) vs data 0.300" in out
    assert "met      PAC at least twice BC" in out
    assert "not yet  PAC at or above filtered BC: PAC 0.600 (3 seeds) vs filtered BC 0.500 (1 seed)" in out
    assert "not yet  BC+Q reported beside them: BC+Q not run" in out
    kept = json.loads((tmp_path / "results.json").read_text())["bar"]["XS"]
    assert [c["holds"] for c in kept] == [True, True, None, None]
