"""Saving and loading an ``agent.zip`` without unpickling anything.

An ``agent.zip`` is user input (``apply --agent``, a resumed run folder), and SB3 cloudpickles
part of it. Each algorithm's ``load`` (:func:`sb3_loader`) reads the zip's ``data`` JSON
itself and passes SB3 a ``custom_objects`` replacement, built here from the env and the
AgentConfig, for every pickled entry, so SB3 never unpickles; the weights go through
``torch.load(..., weights_only=True)``. :func:`save_agent` adds the noise's state as plain
JSON.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import FloatSchedule

from autoshrink.agent.noise import TruncatedNormalActionNoise, bind_noise
from autoshrink.compression.documents import MAX_BYTES, parse_document
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import to_jsonable
from autoshrink.compression.models import load_problem

if TYPE_CHECKING:
    from autoshrink.agent.algorithms import Agent
    from autoshrink.agent.config import AgentConfig

#: Attribute that carries our JSON state (noise, episode-info buffers) into the zip's data.
AGENT_STATE_KEY = "autoshrink_state"
AGENT_STATE_VERSION = 1
#: The largest weight file of an agent zip read (an AMC agent's are a few hundred KB).
MAX_WEIGHT_BYTES = 256 * 2**20
#: Names of the weight files SB3 writes: policy.pth, actor.optimizer.pth, ...
_PTH_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*(\.[a-z][a-z0-9]*(_[a-z0-9]+)*)*\.pth")


def save_agent(agent: Agent, path: Path) -> None:
    """``agent.save(path)``, with the noise and episode-info state as plain JSON in the zip.

    SB3 still cloudpickles into the zip what JSON cannot hold (spaces, classes, schedules,
    the noise object), for other SB3 tools; the loaders of :func:`sb3_loader` never unpickle
    it, and restore the noise and episode infos from the JSON state instead.
    """
    if not isinstance(agent, BaseAlgorithm):
        agent.save(path)
        return
    agent.__dict__[AGENT_STATE_KEY] = _agent_state(agent)
    try:
        agent.save(path)
    finally:
        agent.__dict__.pop(AGENT_STATE_KEY, None)


#: Entries of an agent zip's data that SB3 uses as numbers, and the types they must have.
_SCALARS: dict[str, tuple[type, ...]] = {
    "num_timesteps": (int,),
    "_total_timesteps": (int,),
    "_episode_num": (int,),
    "_n_updates": (int,),
    "learning_starts": (int,),
    "buffer_size": (int,),
    "batch_size": (int,),
    "n_steps": (int,),
    "n_epochs": (int,),
    "gradient_steps": (int,),
    "seed": (int, type(None)),
    "gamma": (int, float),
    "tau": (int, float),
    "_current_progress_remaining": (int, float),
}


def zip_document(zf: zipfile.ZipFile, name: str, path: Path) -> object:
    """The JSON member ``name`` of an agent zip, through the checked reader.

    Its size in the zip's directory is checked before it is inflated (a zip bomb stops
    there), then the text is parsed with the reader's caps.

    Raises:
        CheckpointError: If the member is missing, too large or not well-formed JSON.
    """
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path} is not a saved agent: it has no {name!r}") from None
    if info.file_size > MAX_BYTES:
        raise CheckpointError(f"{path}: its {name!r} is {info.file_size:,} bytes, too large")
    return parse_document(zf.read(info), f"{path}: {name}", error=CheckpointError)


def _agent_state(agent: BaseAlgorithm) -> dict[str, Any]:
    noise = getattr(agent, "action_noise", None)
    state = {
        "version": AGENT_STATE_VERSION,
        "noise": noise.state_dict() if isinstance(noise, TruncatedNormalActionNoise) else None,
        "ep_info_buffer": list(agent.ep_info_buffer or ()),
        "ep_success_buffer": list(agent.ep_success_buffer or ()),
    }
    out: dict[str, Any] = {}
    for key, value in state.items():
        try:
            out[key] = to_jsonable(value)
        except TypeError:  # episode infos with odd values only feed SB3's rollout logs
            out[key] = None
    return out


def _is_serialized(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def read_agent_zip(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The zip's bytes and its ``data`` JSON, parsed with ``json`` only.

    SB3 hands every ``.pth`` member to ``set_parameters``, which looks its name up as an
    attribute path on the model; only plain dotted names are let through.
    """
    try:
        raw = Path(path).read_bytes()
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = zf.namelist()
            data = zip_document(zf, "data", Path(path))
    except (OSError, KeyError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a saved agent: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a saved agent: its data is not an object")
    for key in ("observation_space", "action_space"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{path} is not a saved agent: it has no {key!r}")
    for key, kinds in _SCALARS.items():
        value = data.get(key)
        if key in data and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise CheckpointError(f"{path} is not a saved agent: its {key!r} has the wrong type")
    odd = [n for n in names if n.endswith(".pth") and not _PTH_NAME.fullmatch(n)]
    if odd:
        raise CheckpointError(f"{path} holds unexpected weight files {odd}")
    _check_weights(raw, names, Path(path))
    return raw, data


def _check_weights(raw: bytes, names: list[str], path: Path) -> None:
    """Every ``.pth`` member is a dict that ``torch.load(weights_only=True)`` reads.

    Read here, before SB3 reads them again, so that a pickle payload, garbage or a missing
    ``policy.pth`` is one line naming the member, not torch's ten-line refusal; nothing is
    unpickled either way.

    Raises:
        CheckpointError: If ``policy.pth`` is missing, or a member is too large, unreadable
            or not a dict of weights.
    """
    if "policy.pth" not in names:
        raise CheckpointError(f"{path} is not a saved agent: it has no 'policy.pth'")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for name in (n for n in names if n.endswith(".pth")):
            info = zf.getinfo(name)
            if info.file_size > MAX_WEIGHT_BYTES:
                raise CheckpointError(
                    f"{path}: its {name!r} is {info.file_size:,} bytes, too large"
                )
            try:
                loaded = torch.load(
                    io.BytesIO(zf.read(info)), map_location="cpu", weights_only=True
                )
            except Exception as exc:  # torch's refusal of a pickle payload, garbage, ...
                raise CheckpointError(
                    f"{path}: its {name!r} cannot be read: {load_problem(exc)}"
                ) from None
            if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
                raise CheckpointError(
                    f"{path}: its {name!r} holds {type(loaded).__name__}, not named weights"
                )


def _check_space(path: Path, data: dict[str, Any], key: str, space: gym.Space[Any]) -> None:
    entry = data.get(key)
    shape = entry.get("_shape") if isinstance(entry, dict) else None
    if isinstance(shape, list) and tuple(shape) != tuple(space.shape or ()):
        raise CheckpointError(
            f"the agent in {path} has the {key} shape {tuple(shape)}, the env "
            f"{tuple(space.shape or ())}"
        )


def _rebuilt_policy_kwargs(path: Path, entry: dict[str, Any], ours: dict[str, Any]) -> Any:
    """policy_kwargs from the plain first-level items SB3 wrote next to the pickle.

    Items that were not JSON (classes such as ``activation_fn``) are stored as ``str(value)``;
    they are taken from ``ours`` (the AgentConfig's policy_kwargs) when ``str`` agrees.
    """
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key.startswith(":"):
            continue
        mine = ours.get(key)
        if key in ours and str(mine) == value and not _is_json(mine):
            out[key] = mine
        elif isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            raise CheckpointError(
                f"the agent in {path} has policy_kwargs[{key!r}] = {value}, which autoshrink "
                "does not unpickle; pass the same object in the AgentConfig's policy_kwargs"
            )
        else:
            out[key] = value
    return out


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _episode_infos(values: Any, maxlen: Any) -> deque[dict[str, Any]] | None:
    if not isinstance(values, list):
        return None
    size = (
        maxlen if isinstance(maxlen, int) and not isinstance(maxlen, bool) and maxlen > 0 else 100
    )
    infos = (v for v in values if isinstance(v, dict) and all(isinstance(k, str) for k in v))
    return deque(infos, maxlen=size)


def _custom_objects(
    path: Path,
    data: dict[str, Any],
    cls: type[BaseAlgorithm],
    policy_class: type[BasePolicy],
    kwargs: dict[str, Any],
    env: gym.Env,
) -> dict[str, Any]:
    """A replacement, built here, for every entry of ``data`` that SB3 would unpickle.

    The spaces, policy class, schedules, buffers' classes, noise and episode buffers are
    always rebuilt (pickled or not); any other pickled entry is rebuilt from the constructor
    kwargs of our builder, or the constructor's default. A pickled entry that is neither is
    refused (CheckpointError) rather than handed to SB3, which would unpickle it.
    """
    _check_space(path, data, "observation_space", env.observation_space)
    _check_space(path, data, "action_space", env.action_space)
    state = data.get(AGENT_STATE_KEY)
    state = state if isinstance(state, dict) and not _is_serialized(state) else {}
    window = data.get("_stats_window_size")
    own: dict[str, Any] = {
        "policy_class": policy_class,
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "action_noise": None,  # DDPG/TD3: ours is rebuilt and bound after loading
        "lr_schedule": FloatSchedule(kwargs["learning_rate"]),
        "replay_buffer_class": kwargs.get("replay_buffer_class"),
        "rollout_buffer_class": kwargs.get("rollout_buffer_class"),
        "_last_obs": None,  # the env is reset before training, as SB3 does with force_reset
        "_last_original_obs": None,
        "_last_episode_starts": None,
        "ep_info_buffer": _episode_infos(state.get("ep_info_buffer"), window),
        "ep_success_buffer": _episode_infos(state.get("ep_success_buffer"), window),
        AGENT_STATE_KEY: None,
    }
    custom = {key: value for key, value in own.items() if key in data}
    defaults = inspect.signature(cls.__init__).parameters
    for key, value in data.items():
        if key in custom or not _is_serialized(value):
            continue
        if key == "policy_kwargs":
            custom[key] = _rebuilt_policy_kwargs(path, value, kwargs.get(key) or {})
        elif key in kwargs:
            custom[key] = kwargs[key]
        elif key in defaults and defaults[key].default is not inspect.Parameter.empty:
            custom[key] = defaults[key].default
        else:
            raise CheckpointError(
                f"{path} holds a pickled entry {key!r} that autoshrink does not rebuild; "
                "it refuses to unpickle it"
            )
    return custom


def sb3_loader(
    cls: type[BaseAlgorithm],
    policy_class: type[BasePolicy],
    agent_kwargs: Callable[[AgentConfig, int], dict[str, Any]],
    make_noise: Callable[[AgentConfig, gym.Env], TruncatedNormalActionNoise],
) -> Callable[..., Agent]:
    """A ``load(path, env, config, n_units)`` for agents of ``cls`` that never unpickles.

    Args:
        cls: The SB3 algorithm class.
        policy_class: The policy class its builder uses.
        agent_kwargs: The builder's constructor kwargs for a config and a unit count; a
            pickled entry of the zip is rebuilt from them.
        make_noise: Builds the action noise of DDPG and TD3, whose state the zip holds.
    """

    def load(path: Path, env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
        raw, data = read_agent_zip(path)
        custom = _custom_objects(path, data, cls, policy_class, agent_kwargs(config, n_units), env)
        # SB3 replaces every entry named in custom_objects instead of unpickling it, and reads
        # the weights with torch.load(weights_only=True). The bytes read above are loaded, so
        # the file cannot change between the check and the load.
        try:
            model = cls.load(io.BytesIO(raw), env=env, device=config.device, custom_objects=custom)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            # weights of another shape or other names: load_state_dict's many-line report
            first = " ".join(str(exc).split())[:300]
            raise CheckpointError(
                f"the weights in {path} do not fit this agent: {type(exc).__name__}: {first}"
            ) from exc
        model.__dict__.pop(AGENT_STATE_KEY, None)
        if isinstance(model, TD3):  # DDPG is a TD3: rebuild the noise and restore its state
            noise = make_noise(config, env)
            state = data.get(AGENT_STATE_KEY)
            saved = state.get("noise") if isinstance(state, dict) else None
            if isinstance(saved, dict):
                _restore_noise(path, noise, saved)
            bind_noise(model, noise)
        return model

    return load


def _restore_noise(path: Path, noise: TruncatedNormalActionNoise, state: dict[str, Any]) -> None:
    try:
        noise.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the noise state in {path} is malformed: {exc}") from exc
