"""Searches on the real CompressionEnv (a 2-epoch smallcnn on digits, no per-episode tuning)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.scripted import UniformSearch
from autoshrink.agent.scripted_view import EnvView
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.search.report import read_result
from autoshrink.compression.artifact import load_artifact
from autoshrink.compression.counting import count_macs, count_params


def cfg(algorithm: str, episodes: int = 4, seed: int = 0) -> AgentConfig:
    return AgentConfig(
        algorithm=algorithm,
        episodes=episodes,
        warmup_episodes=2,
        batch_size=8,
        seed=seed,
        policy_kwargs={"net_arch": [32, 32]},
    )


def within_limits(env, metrics) -> bool:
    keys = {"flops": "macs", "params": "params", "size": "bytes"}
    return all(metrics[keys[m]] <= lim for m, lim in env.limits.items())


@pytest.mark.parametrize("algorithm", ["ddpg", "td3", "sac", "ppo", "random", "uniform", "global"])
def test_every_alias_searches_the_real_env(tmp_path, make_env, algorithm):
    env = make_env()
    result = run_search(env, cfg(algorithm), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    assert env.evaluator.calls == 4  # the same number of evaluations for every alias
    assert all(r["budgets_met"] for r in rows)
    assert within_limits(env, result.best_metrics)
    assert set(result.best_policy.units) == {u.name for u in env.units}


@pytest.mark.parametrize("keep_action", ["budget", "absolute"])
def test_uniform_is_uniform_and_tight(make_env, keep_action):
    env = make_env(mode="prune", flops=0.4, keep_action=keep_action)
    view = EnvView(env)
    (actions,) = UniformSearch(env, cfg("uniform"), len(env.units)).candidates(view)
    env.reset()
    for row in actions:
        *_, info = env.step(row)
    assert not info["clamped"]
    # one keep-ratio for every unit: the realised channels are each unit's rounding of it
    grid = np.linspace(env.config.min_keep, 1.0, 4001)
    keeps = [k for k in grid if env._channels == [u.kept(k) for u in env.units]]
    assert keeps and info["macs_ratio"] <= 0.4
    bigger = [u.kept(min(1.0, max(keeps) + 0.05)) for u in env.units]
    assert not view.feasible(bigger, 32)


@pytest.mark.parametrize("keep_action", ["budget", "absolute"])
def test_encode_inverts_the_decoding(make_env, keep_action):
    env = make_env(mode="joint", flops=0.6, size=0.2, keep_action=keep_action, fill_budget=False)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.reset()
        for _ in env.units:
            env.step(rng.uniform(0, 1, 2))
        channels, bits = list(env._channels), list(env._bits)  # a feasible realised policy
        env.reset()
        for row in env.encode(channels, bits):
            *_, info = env.step(row)
        assert env._channels == channels and env._bits == bits
        assert not info["clamped"]


def test_global_ranks_channels_across_units_to_the_budget(make_env, tmp_path):
    env = make_env(mode="prune", flops=0.3)
    result = run_search(env, cfg("global", episodes=2), tmp_path / "g")
    ratio = result.best_metrics["macs_ratio"]
    assert 0.25 < ratio <= 0.3  # tight: the bisection stops at the budget
    keeps = [u.keep for u in result.best_policy.units.values()]
    assert np.ptp(keeps) > 0.01  # per-unit counts follow the ranking, not one ratio


def test_same_seed_same_policy_on_the_real_env(tmp_path, make_env):
    a = run_search(make_env(), cfg("ddpg", episodes=4, seed=5), tmp_path / "a")
    b = run_search(make_env(), cfg("ddpg", episodes=4, seed=5), tmp_path / "b")
    assert a.best_policy == b.best_policy and a.best_reward == b.best_reward
    read = lambda p: (p / "episodes.jsonl").read_text().count('"reward"')  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b") == 4


def test_finish_writes_a_result_an_independent_count_agrees_with(tmp_path, make_env):
    env = make_env()
    search = run_search(env, cfg("random", episodes=3), tmp_path / "run")
    report = finish_search(env, search, FinalConfig(epochs=1, latency_repeats=3))
    on_disk = read_result(tmp_path / "run" / "result.json")
    assert on_disk["budgets_met"] is True and on_disk == json.loads(json.dumps(report))
    for key in ("model", "dataset", "budgets", "baseline", "compressed", "seed", "episodes"):
        assert key in on_disk
    for side in ("baseline", "compressed"):
        assert {"accuracy", "macs", "params", "bytes"} <= set(on_disk[side])
    path = tmp_path / "run" / on_disk["artifact"]
    model = load_artifact(path)
    x = env.data.example_input(1)
    assert count_macs(model, x) == on_disk["compressed"]["macs"]
    assert count_params(model) == on_disk["compressed"]["params"]
    with safe_open(str(path), framework="pt") as fh:
        payload = sum(fh.get_tensor(k).numel() * fh.get_tensor(k).element_size() for k in fh.keys())
    assert payload == on_disk["compressed"]["bytes"]
    assert on_disk["compressed"]["macs"] <= env.limits["flops"]
    assert on_disk["compressed"]["bytes"] <= env.limits["size"]
    assert 0.0 <= on_disk["compressed"]["accuracy"] <= 1.0


def test_centred_budget_actions_realise_the_uniform_policy(make_env):
    env = make_env(mode="prune", flops=0.4, fill_budget=False)
    view = EnvView(env)
    (uniform,) = UniformSearch(env, cfg("uniform"), len(env.units)).candidates(view)
    env.reset()
    for row in uniform:
        env.step(row)
    expected = list(env._channels)
    env.reset()
    for _ in env.units:
        *_, info = env.step(np.array([0.5], np.float32))
    # the first unit takes the uniform share; later ones also spend the rounding slack
    # their predecessors left, so none gets less than the uniform policy gives it
    assert env._channels[0] == expected[0]
    assert all(c >= e for c, e in zip(env._channels, expected, strict=True))
    assert not info["clamped"] and info["macs_ratio"] <= 0.4
