"""The model zoo: the chapter's networks, their variants and torchvision references.

Importing this package registers every model; use :func:`create` and :func:`list_models`.
"""

import importlib as _importlib
import os as _os

from . import alexnet, googlenet, nin, reference, vgg  # noqa: F401  (registration side effect)
from ._common import InputTooSmallError, init_cnn
from ._registry import (
    ModelSpec,
    UnknownModelError,
    create,
    default_models,
    get_spec,
    list_models,
    register_model,
)

__all__ = [
    "InputTooSmallError",
    "ModelSpec",
    "UnknownModelError",
    "create",
    "default_models",
    "get_spec",
    "init_cnn",
    "list_models",
    "register_model",
]


def _load_plugins() -> None:
    """Import the modules named in $CNNBENCH_PLUGINS (a comma list) so they register models.

    The runner's workers are spawned fresh, so a model registered only in the parent process
    would be unknown there; a plugin module is imported everywhere the zoo is.
    """
    for name in _os.environ.get("CNNBENCH_PLUGINS", "").split(","):
        if name.strip():
            _importlib.import_module(name.strip())


_load_plugins()
