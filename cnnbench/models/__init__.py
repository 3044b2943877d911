"""The model zoo: the chapter's networks, their variants and torchvision references.

Importing this package registers every model; use :func:`create` and :func:`list_models`.
"""

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
