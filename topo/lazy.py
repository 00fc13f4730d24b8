"""Names imported on first use, so that `topo version` or `topo validate` do not pay for requests and
every pydantic model (about 0.3 s of a 0.45 s start, measured with `python -X importtime`)."""

from __future__ import annotations

import importlib
from typing import Any


class _Lazy:
    """Stands in for `from module import name` in a module's globals until first called or looked into;
    then it puts the real object in its place, so later uses cost nothing extra."""

    __slots__ = ("_module", "_name", "_namespace", "_target")

    def __init__(self, namespace: dict[str, Any], module: str, name: str) -> None:
        self._namespace = namespace
        self._module = module
        self._name = name
        self._target: Any = None

    def _resolve(self) -> Any:
        if self._target is None:
            module = importlib.import_module(self._module)
            # Every name from that module is swapped in at once, so that an `except SomeError` naming one
            # of them sees the real class once anything of its module has run.
            for key, value in list(self._namespace.items()):
                if isinstance(value, _Lazy) and value._module == self._module and value._target is None:
                    value._target = _attribute(module, value._name)
                    self._namespace[key] = value._target
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._resolve(), attr)

    def __repr__(self) -> str:
        return f"<lazy {self._module}.{self._name}>"


def _attribute(module: Any, name: str) -> Any:
    try:
        return getattr(module, name)
    except AttributeError:  # a submodule not imported yet: `from topo import routetest`
        return importlib.import_module(f"{module.__name__}.{name}")


def lazy_import(namespace: dict[str, Any], module: str, *names: str, **aliases: str) -> None:
    """`lazy_import(globals(), "topo.client", "ManagementClient", load_saved="load")` is
    `from topo.client import ManagementClient, load as load_saved`, deferred."""
    for name in names:
        namespace[name] = _Lazy(namespace, module, name)
    for alias, name in aliases.items():
        namespace[alias] = _Lazy(namespace, module, name)
