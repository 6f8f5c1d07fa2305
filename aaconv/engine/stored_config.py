"""A run's config read back from a checkpoint: untrusted data, checked before anything is built from it.

A shared checkpoint may come from anyone, and Hydra's `instantiate` calls whatever `_target_` names. So a
stored config is accepted only as plain values (dicts, lists, strings, numbers, booleans, null) in which
- a `_target_` appears only where the project's own config tree puts one (`task`, `optim`, `schedule`),
  naming a target that tree uses (`known_targets`);
- no other instantiation key (`_args_`, `_partial_`, `_recursive_`, `_convert_`) appears;
- no string holds an interpolation (`${...}`): train.py stores the resolved config, and a resolver such as
  `oc.create` would build a new `_target_` node after this check.
Anything else stops with one CheckpointError line naming the key. The `callbacks` entry (user callbacks, each a
`_target_` of the user's code) is dropped unread: a rebuilt run never trains, so it never needs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aaconv.errors import CheckpointError

INSTANTIATE_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
REQUIRED_GROUPS = ("task", "backbone", "attention", "data")
UNUSED_GROUPS = ("callbacks",)  # training-only groups a rebuilt run leaves out, unread
PLAIN = (dict, list, str, int, float, bool, type(None))


def known_targets(config_dir: str | os.PathLike) -> dict[str, set[str]]:
    """{group: the `_target_` values of its options} over the group folders of a config tree."""
    targets: dict[str, set[str]] = {}
    for option in sorted(Path(config_dir).glob("*/*.yaml")):
        target = OmegaConf.load(option).get("_target_")
        if isinstance(target, str):
            targets.setdefault(option.parent.name, set()).add(target)
    return targets


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, key, value) of every entry below `node`, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        child = f"{path}.{key}" if path else str(key)
        yield child, key, value
        yield from _walk(value, child)


def _problem(path: str, key: Any, value: Any, targets: Mapping[str, set[str]]) -> str | None:
    if not isinstance(key, str | int):
        return f"key {key!r} of type {type(key).__name__} at {path}"
    if key in INSTANTIATE_KEYS:
        group = path.rsplit(".", 1)[0]
        if key == "_target_" and isinstance(value, str) and value in targets.get(group, ()):
            return None
        return f"{path}={value!r} (only the project's own {'/'.join(sorted(targets))} targets are accepted)"
    if not isinstance(value, PLAIN):
        return f"{path} holds a {type(value).__name__}"
    if isinstance(value, str) and "${" in value:
        return f"{path}={value!r} is an interpolation"
    return None


def check_stored_config(config: Any, source: str, targets: Mapping[str, set[str]]) -> DictConfig:
    """`config` (a checkpoint's "config" entry), less its `UNUSED_GROUPS`, as a DictConfig once it is known to
    be plain data; else a CheckpointError naming `source` and the first offending key."""
    if not isinstance(config, dict) or not all(isinstance(config.get(g), dict) for g in REQUIRED_GROUPS):
        raise CheckpointError(
            f"{source} holds no aaconv run config (needs {', '.join(REQUIRED_GROUPS)}); "
            "pass a last.pt / best.pt written by train.py"
        )
    config = {key: value for key, value in config.items() if key not in UNUSED_GROUPS}
    for path, key, value in _walk(config, ""):
        problem = _problem(path, key, value, targets)
        if problem is not None:
            raise CheckpointError(
                f"{source} is refused: its config has {problem}; a checkpoint's config is read as "
                "plain values only, so use a checkpoint written by train.py"
            )
    return OmegaConf.create(config)
