"""typer 0.29 converts each parameter's value with a pydantic TypeAdapter it builds on first use, even
for an option that was not given: `--help`'s absent value alone imports pydantic (about 45 ms of a
130 ms `topo version`, CPU time). An absent value needs no conversion (typer returns None, or () for a
repeatable option, before it looks at the adapter), so the adapter is built only for a value that was
given, exactly as typer builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def defer_typer_adapters() -> None:
    try:
        from typer import _coercion
        from typer.core import _TyperParameter
    except ImportError:  # another typer: it converts in its own way, only perhaps more slowly
        return
    runtime_param = getattr(_coercion, "RuntimeParam", None)
    build = getattr(_coercion, "build_runtime_param", None)
    if runtime_param is None or build is None or not hasattr(_TyperParameter, "get_runtime_param"):
        return

    @dataclass(frozen=True)
    class Deferred(runtime_param):  # type: ignore[misc,valid-type]
        descriptor: Any

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            real = build(self.descriptor)
            param._runtime_param = real  # later values of this parameter go straight to it
            return real._coerce_value(value, param=param, ctx=ctx)

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            descriptor = self.type_descriptor
            self._runtime_param = Deferred(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, descriptor=descriptor
            )
        return self._runtime_param

    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
