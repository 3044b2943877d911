"""The model registry: names → builders plus the metadata the harnesses and reports need.

Modelled on torchvision's ``models/_api.py``: a decorator registers a builder, duplicate names
are an error, ``list_models`` takes names, comma lists, fnmatch patterns and ``all``, and
``create(name, **overrides)`` builds a fresh model. There are no weights to ship, so no tags.

Plugins: ``$CNNBENCH_PLUGINS`` names modules (a comma list) that register more models. They are
imported lazily, on the first call of :func:`list_models`, :func:`get_spec`, :func:`create` or
:func:`default_models` (or of :func:`load_plugins`), not when ``cnnbench.models`` is imported, so
that a broken plugin is an error the caller can report — a one-line :class:`PluginError` naming
the module — rather than an import-time traceback. Loading is idempotent: each module is
imported once per process; one that failed raises the same :class:`PluginError` on every later
call while ``$CNNBENCH_PLUGINS`` still names it, and the models it registered before failing are
removed. The runner's workers start fresh, with the parent's environment, and import the zoo, so
they load the same plugins on their first lookup and a failing plugin fails there the same way.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from torch import nn

__all__ = [
    "ModelSpec",
    "UnknownModelError",
    "PluginError",
    "RegistrationError",
    "load_plugins",
    "register_model",
    "get_spec",
    "list_models",
    "default_models",
    "create",
]


@dataclass(frozen=True)
class ModelSpec:
    """What cnnbench knows about a registered model besides its builder."""

    name: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    family: str  # "alexnet", "vgg", "nin", "googlenet" or "torchvision" for the references
    section: str | None  # d2l chapter section ("8.4"); None for torchvision references
    input_size: int  # default square input side in pixels (the chapter's size)
    in_channels: int  # 1 for the chapter's Fashion-MNIST models, 3 for ImageNet references
    num_classes: int
    lr: float | None  # the chapter's SGD learning rate; None where the chapter trains none
    description: str  # one line for tables
    parent: str | None = None  # the model this one is a variant of (GoogLeNet's exercises)
    default: bool = False  # part of the default selection (the four chapter models)
    # training options that define the variant (googlenet_ls: label smoothing); the runner applies
    # them unless the command line sets the same option
    train_overrides: dict = field(default_factory=dict, compare=False)

    @property
    def sized_head(self) -> bool:
        """True when the builder sizes its first linear layer from ``image_size``."""
        return "image_size" in inspect.signature(self.builder).parameters


class UnknownModelError(ValueError):
    """A model name or pattern that matches nothing registered."""

    def __init__(self, name: str, suggestion: str | None):
        self.name = name
        self.suggestion = suggestion
        hint = f" — did you mean '{suggestion}'?" if suggestion else ""
        super().__init__(f"unknown model '{name}'{hint} see: cnnbench list")


class RegistrationError(ValueError):
    """A ``register_model`` call that cannot be honoured (duplicate name, bad argument)."""


class PluginError(ValueError):
    """A module named in ``$CNNBENCH_PLUGINS`` failed to import or to register its models.

    The message is one line naming the module and the error; ``module`` is the module's name.
    """

    def __init__(self, module: str, message: str):
        self.module = module
        super().__init__(message)

    def __reduce__(self):  # picklable, so that it can cross from a worker process
        return type(self), (self.module, str(self))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    section: str | None,
    input_size: int,
    description: str,
    lr: float | None = None,
    in_channels: int = 1,
    num_classes: int = 10,
    parent: str | None = None,
    default: bool = False,
    train_overrides: dict | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (the function's name by default)."""

    def positive_int(what: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RegistrationError(f"{what} must be a positive int, not {value!r}")

    if name is not None and (not isinstance(name, str) or not name):
        raise RegistrationError(f"the model name must be a non-empty str, not {name!r}")
    for what, value in (("family", family), ("description", description)):
        if not isinstance(value, str):
            raise RegistrationError(f"{what} must be a str, not {value!r}")
    for what, value in (("input_size", input_size), ("in_channels", in_channels),
                        ("num_classes", num_classes)):  # fmt: skip
        positive_int(what, value)

    def wrapper(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(fn):
            raise RegistrationError(f"register_model decorates a model builder, not {fn!r}")
        key = name or fn.__name__
        if key in _REGISTRY:
            raise RegistrationError(f"a model is already registered as '{key}'")
        if parent is not None and parent not in _REGISTRY:
            raise RegistrationError(
                f"'{key}' names parent '{parent}', which is not registered (yet)"
            )
        _REGISTRY[key] = ModelSpec(
            name=key,
            builder=fn,
            family=family,
            section=section,
            input_size=input_size,
            in_channels=in_channels,
            num_classes=num_classes,
            lr=lr,
            description=description,
            parent=parent,
            default=default,
            train_overrides=dict(train_overrides or {}),
        )
        return fn

    return wrapper


_PLUGINS_LOADED: set[str] = set()  # modules imported (or being imported) from $CNNBENCH_PLUGINS
_PLUGIN_ERRORS: dict[str, PluginError] = {}  # modules that failed, and how


def _plugin_names() -> list[str]:
    return [n.strip() for n in os.environ.get("CNNBENCH_PLUGINS", "").split(",") if n.strip()]


def _plugin_error(module: str, exc: BaseException) -> PluginError:
    registering = isinstance(exc, RegistrationError) or (
        isinstance(exc, TypeError) and str(exc).startswith("register_model(")
    )
    what = "failed to register a model" if registering else "failed to import"
    # where in the plugin's own code it went wrong: the innermost frame outside this module and
    # importlib's machinery (none when the module itself cannot be found)
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    else:
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__)
            if f.filename != __file__
            and not f.filename.startswith(("<frozen", os.path.dirname(importlib.__file__) + os.sep))
        ]  # fmt: skip
        if frames:
            where = f" at {frames[-1].filename}:{frames[-1].lineno}"
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return PluginError(
        module, f"plugin '{module}' (from $CNNBENCH_PLUGINS) {what}{where}: {detail}"
    )


def load_plugins() -> None:
    """Import the modules named in ``$CNNBENCH_PLUGINS`` that are not imported yet.

    Raises :class:`PluginError` for the first one that fails to import or to register — again on
    every call, without importing it a second time. Called by the lookup functions below.
    """
    for module in _plugin_names():
        if module in _PLUGIN_ERRORS:
            raise _PLUGIN_ERRORS[module]
        if module in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(module)  # before importing: a plugin may look models up meanwhile
        before = set(_REGISTRY)
        try:
            importlib.import_module(module)
        except Exception as exc:
            for key in set(_REGISTRY) - before:  # no half-registered plugin
                del _REGISTRY[key]
            _PLUGIN_ERRORS[module] = _plugin_error(module, exc)
            raise _PLUGIN_ERRORS[module] from None


def _suggest(name: str) -> str | None:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.6)
    return close[0] if close else None


def get_spec(name: str) -> ModelSpec:
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, _suggest(name)) from None


def list_models(patterns: str | Iterable[str] | None = None) -> list[str]:
    """Registered names matching ``patterns``, in registration order, without repeats.

    ``patterns`` may be a name, a comma list, fnmatch patterns (``googlenet*``), ``all``, or an
    iterable of those. ``None`` lists every model. A term that matches nothing raises
    :class:`UnknownModelError` so that a typo never silently selects less.
    """
    load_plugins()
    if patterns is None:
        return _ordered(_REGISTRY)
    if isinstance(patterns, str):
        patterns = [patterns]
    terms = [t.strip() for p in patterns for t in p.split(",") if t.strip()]
    chosen: list[str] = []
    for term in terms:
        if term == "all":
            hits = _ordered(_REGISTRY)
        elif term == "default":
            hits = default_models()
        else:
            hits = [n for n in _ordered(_REGISTRY) if fnmatch.fnmatchcase(n, term)]
        if not hits:
            raise UnknownModelError(term, _suggest(term))
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _ordered(names: Iterable[str]) -> list[str]:
    """Chapter order (by section, then name), torchvision references last."""
    return sorted(
        names, key=lambda n: (_REGISTRY[n].section is None, _REGISTRY[n].section or "", n)
    )


def default_models() -> list[str]:
    """The chapter's four networks, the selection when none is given."""
    load_plugins()
    return [n for n in _ordered(_REGISTRY) if _REGISTRY[n].default]


def create(name: str, *, image_size: int | None = None, **overrides) -> nn.Module:
    """Build a fresh ``name`` model.

    ``image_size`` reaches only builders whose head depends on it (AlexNet, VGG); for the others
    it is ignored because their global pooling makes them size-agnostic. Other ``overrides`` go
    to the builder, which rejects arguments it does not know.
    """
    spec = get_spec(name)
    if spec.sized_head:
        overrides["image_size"] = spec.input_size if image_size is None else image_size
    return spec.builder(**overrides)
