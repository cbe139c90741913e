"""Batch specs: grids, defaults, stable job ids, and errors that name the line and the key."""

from __future__ import annotations

import re

import pytest

from autoshrink.agent.batch.grid import key_lines
from autoshrink.agent.batch.spec import EXAMPLE_SPEC, SpecError, load_spec, parse_spec

GRID = """
[defaults]
dataset = "digits"
episodes = 4
flops = 0.7

[grid]
models = ["smallcnn", "resnet20"]
budgets = [{ flops = 0.5 }, { size = "40KB" }]
agents = ["ddpg", "random"]
seeds = [0, 1, 2]
final_epochs = 1
"""


def problems(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.toml")
    return str(info.value)


def test_the_example_is_a_valid_spec_of_quick_searches_on_the_default():
    spec = parse_spec(EXAMPLE_SPEC)
    assert len(spec.jobs) == 4
    for job in spec.jobs:
        assert job.kind == "search"
        assert (job.settings["model"], job.settings["dataset"]) == ("resnet20", "digits")
        assert job.agent_config().episodes <= 10
    assert len({job.id for job in spec.jobs}) == 4


def test_a_grid_expands_in_axis_order_with_defaults_and_overrides():
    spec = parse_spec(GRID)
    assert len(spec.jobs) == 2 * 2 * 2 * 3
    first, second = spec.jobs[0].settings, spec.jobs[1].settings
    assert (first["model"], first["agent"], first["seed"]) == ("smallcnn", "ddpg", 0)
    assert second["seed"] == 1  # the last axis varies fastest
    assert [j.settings["model"] for j in spec.jobs].count("resnet20") == 12
    for job in spec.jobs:
        assert job.settings["episodes"] == 4 and job.final_config().epochs == 1
        env = job.env_config()
        # a budgets entry replaces the defaults' budgets: never flops=0.7 and size together
        if "size" in job.settings:
            assert "flops" not in job.settings and env.size.value == 40_000
        else:
            assert env.flops.value == 0.5
        assert job.agent_config().seed == job.settings["seed"] == env.seed
    # digits defaults to no per-episode fine-tune, as `autoshrink search` does
    assert first["finetune_steps"] == 0


def test_jobs_and_grids_combine_and_job_tables_override_defaults():
    text = GRID + '\n[[jobs]]\nmodel = "resnet32"\nagent = "td3"\nepisodes = 9\nwarmup = 3\n'
    spec = parse_spec(text)
    assert len(spec.jobs) == 25
    (job,) = [j for j in spec.jobs if j.source == "jobs[0]"]
    cfg = job.agent_config()
    assert (cfg.algorithm, cfg.episodes, cfg.warmup_episodes) == ("td3", 9, 3)
    assert job.env_config().flops.value == 0.7  # from the defaults


def test_job_ids_are_stable_and_change_with_any_setting():
    a = [j.id for j in parse_spec(GRID).jobs]
    assert a == [j.id for j in parse_spec(GRID).jobs]
    b = [j.id for j in parse_spec(GRID.replace("episodes = 4", "episodes = 5")).jobs]
    assert not set(a) & set(b)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", i) for i in a)


def test_unknown_keys_are_named_with_their_line_and_a_suggestion():
    text = '[defaults]\nepisodes = 3\n\n[[jobs]]\nmodel = "smallcnn"\nseeed = 1\n'
    message = problems(text)
    assert "line 6 (jobs[0].seeed)" in message and "did you mean 'seed'" in message
    message = problems('[[jobs]]\nmodel = "x"\n[grid]\nmodels = ["a"]\nmdoe = "joint"\n')
    assert "line 5 (grid.mdoe)" in message


def test_bad_values_name_the_line_of_the_key_that_is_wrong():
    text = '[[jobs]]\nmodel = "smallcnn"\n\n[[jobs]]\nflops = "lots"\nagent = "dqn"\n'
    message = problems(text)
    assert "line 5 (jobs[1].flops)" in message and "cannot read flops budget" in message
    text = '[defaults]\nagent = "dqn"\n[[jobs]]\nmodel = "smallcnn"\n'
    assert "line 2 (defaults.agent)" in problems(text)
    text = '[grid]\nmodels = ["smallcnn"]\nbudgets = [{ flops = "1.5XB" }]\n'
    assert "line 3 (grid.budgets)" in problems(text)
    # every problem at once, and a grid's repeated problem once
    text = '[grid]\nseeds = [0, 1, 2]\nmode = "pruune"\n[[jobs]]\ncpus = 0\n'
    message = problems(text)
    assert "2 problem(s)" in message and "line 3 (grid.mode)" in message
    assert "line 5 (jobs[0].cpus)" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[jobs]]\nmodel = \n", "malformed TOML"),
        ("", "holds no job"),
        ("workers = 2\n[[jobs]]\n", "line 1 (workers): unknown top-level key"),
        ("[grid]\nmodels = []\n", "line 2 (grid.models): must be a non-empty array"),
        ('[grid]\nmodels = ["a"]\nmodel = "b"\n', "line 3 (grid.model)"),
        ("[grid]\nepisodes = 3\n", "a grid needs at least one axis"),
        ('[[jobs]]\nkind = "prune"\n', "line 2 (jobs[0].kind)"),
        ('[[jobs]]\nkind = "apply"\n', "needs agent_from"),
        ('[[jobs]]\nkind = "apply"\nagent_from = "x"\nepisodes = 3\n', "unknown key 'episodes'"),
        ('[[jobs]]\nmodel = "a"\n[[jobs]]\nmodel = "a"\n', "same settings as jobs[0]"),
        ("[[jobs]]\ntimeout = -1\n", "line 2 (jobs[0].timeout)"),
    ],
)
def test_spec_errors(text, expected):
    assert expected in problems(text)


def test_paths_are_relative_to_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "spec.toml"
    path.write_text(
        '[[jobs]]\nkind = "apply"\nagent_from = "../runs/r1"\nmodel = "resnet56"\n'
        '[[jobs]]\ncheckpoint = "w.pt"\nmodel = "nets.py:make"\n'
    )
    apply, search = load_spec(path).jobs
    assert apply.settings["agent_from"] == str(tmp_path / "runs" / "r1")
    assert apply.kind == "apply" and "r1" in apply.label
    assert "dataset" not in apply.settings  # an apply job takes it from the agent's search
    assert search.settings["checkpoint"] == str(tmp_path / "sub" / "w.pt")
    assert search.settings["model"] == f"{tmp_path / 'sub' / 'nets.py'}:make"
    assert parse_spec(path.read_text()).jobs[1].settings["checkpoint"] == "w.pt"


APPLY = '[[jobs]]\nkind = "apply"\nmodel = "resnet32"\n'


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'agent_from = "runs/a"\npolicy_from = "p.json"\n',
            "line 5 (jobs[0].policy_from): give agent_from or policy_from, not both",
        ),
        ("", "needs agent_from (a search run folder) or policy_from"),
        ("policy_from = 3\n", "needs agent_from (a search run folder) or policy_from"),
        (
            'agent_from = "runs/a"\nmap = "depth"\n',
            "line 5 (jobs[0].map): map stretches a policy_from",
        ),
        ('policy_from = "p.json"\nmap = "width"\n', "line 5 (jobs[0].map): must be one of"),
        ('policy_from = "p.json"\nmode = "prune"\n', "line 5 (jobs[0].mode): mode is set by"),
    ],
)
def test_an_apply_job_takes_exactly_one_source_and_map_only_with_a_policy(extra, expected):
    assert expected in problems(APPLY + extra)


def test_a_policy_apply_job_resolves_its_path_and_says_so_in_its_label(tmp_path):
    path = tmp_path / "sub" / "spec.toml"
    path.parent.mkdir()
    path.write_text(
        APPLY + 'policy_from = "../runs/r20/policy.json"\nmap = "depth"\nflops = 0.5\n'
        '[[jobs]]\nkind = "apply"\nmodel = "smallcnn"\npolicy_from = "r1"\n'
    )
    mapped, as_is = load_spec(path).jobs
    assert mapped.settings["policy_from"] == str(tmp_path / "runs" / "r20" / "policy.json")
    assert (mapped.kind, mapped.settings["map"]) == ("apply", "depth")
    assert "apply policy r20 depth-map" in mapped.label and "flops<=0.5" in mapped.label
    assert as_is.settings["policy_from"] == str(tmp_path / "sub" / "r1")
    assert "apply policy r1 " in as_is.label and "its budgets" in as_is.label
    assert "map" not in as_is.settings and "dataset" not in as_is.settings


def test_load_spec_reports_a_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read batch spec"):
        load_spec(tmp_path / "nope.toml")


def test_key_lines_finds_tables_arrays_of_tables_and_keys():
    text = '# c\n[defaults]\nmodel = "x"\n[[jobs]]\n\n[[jobs]]\n"seed" = 1\n[grid]\nseeds=[1]\n'
    lines = key_lines(text)
    assert lines["defaults.model"] == 3
    assert (lines["jobs[0]"], lines["jobs[1]"], lines["jobs[1].seed"]) == (4, 6, 7)
    assert lines["grid.seeds"] == 9
