"""The real apps in this process: how the outside fuzz and the server-logic tests run a whole federation fast.

What: ``load_apps`` finds the ServerApp's and ClientApp's modules as Flower does, by the component
references in pyproject.toml (nothing imports the apps: the layout rule); ``server_process`` gives
this process a ServerApp's task identity (Flower's Messages take their run id from it) with quiet
logs and warnings. ``server_fuzz.FuzzGrid`` then stands in for Flower's grid.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import tomllib  # type: ignore[import-not-found,unused-ignore]  # Python 3.11+, as the tests use it
from flwr.supercore.task_identity import TaskIdentity

from fedlatent.runs import app_dir


def load_apps() -> tuple[ModuleType, ModuleType]:
    """The ServerApp's and the ClientApp's modules, found as Flower finds them (pyproject.toml's components)."""
    components = tomllib.loads((app_dir() / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    server, client = (importlib.import_module(components[k].partition(":")[0]) for k in ("serverapp", "clientapp"))
    return server, client


@contextmanager
def server_process() -> Iterator[None]:
    """Flower's task identity of a ServerApp (its Messages need it), and quiet logs (every rejection logs a line)."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, 0
    loggers = {name: logging.getLogger(name) for name in ("fedlatent", "flwr")}
    levels = {name: lg.level for name, lg in loggers.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers.values():
                lg.setLevel(logging.ERROR)
            yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
        for name, lg in loggers.items():
            lg.setLevel(levels[name])
