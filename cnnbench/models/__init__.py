"""The model zoo: the chapter's networks, their variants and torchvision references.

Importing this package registers every built-in model; use :func:`create` and
:func:`list_models`. The modules named in ``$CNNBENCH_PLUGINS`` are imported on the first lookup
(see :mod:`cnnbench.models._registry`); one that fails raises :class:`PluginError`.
"""

from . import alexnet, googlenet, nin, reference, vgg  # noqa: F401  (registration side effect)
from ._common import InputTooSmallError, init_cnn
from ._registry import (
    ModelSpec,
    PluginError,
    RegistrationError,
    UnknownModelError,
    create,
    default_models,
    get_spec,
    list_models,
    load_plugins,
    register_model,
)

__all__ = [
    "InputTooSmallError",
    "ModelSpec",
    "PluginError",
    "RegistrationError",
    "UnknownModelError",
    "create",
    "default_models",
    "get_spec",
    "init_cnn",
    "list_models",
    "load_plugins",
    "register_model",
]
