"""typer 0.29 converts each parameter's value with a pydantic TypeAdapter it builds on first use, even
for an option that was not given: `--help`'s absent value alone imports pydantic (about 45 ms of a
130 ms `topo version`, CPU time). An absent value needs no conversion (typer returns None, or () for a
repeatable option, before it looks at the adapter), so the adapter is built only for a value that was
given, exactly as typer builds it. A given str, bool or list of str needs none either: the adapter
would hand it back as it is (a list for a tuple), so `plan -f FILE` can send its first request before
pydantic is imported (topo.first_read)."""

from __future__ import annotations

from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

_UNSURE = object()


def _as_given(annotation: Any, value: Any) -> Any:
    """`value` as the adapter for `annotation` would return it, for the plain cases; else _UNSURE."""
    if get_origin(annotation) in (Union, UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(rest) != 1:
            return _UNSURE
        annotation = rest[0]
    if annotation in (str, bool) and type(value) is annotation:
        return value
    is_str_list = get_origin(annotation) is list and get_args(annotation) == (str,)
    if is_str_list and isinstance(value, (list, tuple)) and all(type(item) is str for item in value):
        return list(value)
    return _UNSURE


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
            info = self.descriptor.parameter_info
            if getattr(info, "parser", None) is None and getattr(info, "click_type", None) is None:
                given = _as_given(self.descriptor.annotation, value)
                if given is not _UNSURE:
                    return given
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
