"""Developer function tools: ``@tool`` turns a Python callable into a :class:`FunctionTool`.

The schema comes from the signature (pydantic), the descriptions from the docstring
(first paragraph for the tool, an ``Args:`` section for the parameters). A function whose only
parameter is a pydantic model takes that model's fields as its arguments. A raw JSON schema
can be given instead. Sync callables run in a worker thread; async ones on the loop.

Example::

    import anyio
    from harmony_agent import tool
    from harmony_agent.tools import RunContext

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first addend
            b: the second addend
        '''
        return a + b

    async def main():
        async with RunContext.open() as ctx:
            result = await add.invoke('{"a": 2, "b": 3}', ctx)
        assert result.text == "5"
        assert add.parameters["properties"]["a"] == {"type": "integer", "description": "the first addend"}

    anyio.run(main)
"""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Callable
from typing import Any, get_type_hints, overload

import anyio.to_thread
import pydantic
from harmony_agent.errors import ConfigurationError, ToolArgumentsError

from ._schema import simplify_schema
from .base import ApprovalPolicy, RunContext, Tool, check_approval_policy

__all__ = ["FunctionTool", "tool"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _split_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    params: dict[str, str] = {}
    match = re.search(r"^(Args|Arguments|Parameters):\s*$", doc, re.MULTILINE)
    body = doc[: match.start()] if match else doc
    if match:
        current = None
        for line in doc[match.end() :].splitlines():
            if not line.strip():
                continue
            if not line.startswith((" ", "\t")):
                break  # next section (Returns:, Raises:, ...)
            m = re.match(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if m and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current:
                params[current] = (params[current] + " " + line.strip()).strip()
    description = body.strip().split("\n\n")[0].replace("\n", " ").strip()
    return description, params


class FunctionTool(Tool):
    """A developer function (namespace ``functions``) backed by a Python callable.

    ``handler`` is called with the arguments as keyword arguments (plus ``ctx=`` when
    ``takes_ctx``). With ``model`` set, the arguments are first converted by that pydantic
    model (a single model parameter is passed the model instance).
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        name: str,
        description: str,
        parameters: dict[str, Any],
        model: type[pydantic.BaseModel] | None = None,
        single_model_param: str | None = None,
        takes_ctx: bool = False,
        timeout: float | None = 60.0,
        needs_approval: ApprovalPolicy = False,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ConfigurationError(
                f"tool name {name!r} is not a valid identifier; harmony declares tools as "
                "TypeScript types, so use letters, digits and underscores."
            )
        self.handler = handler
        self.name = name
        self.description = description
        self.parameters = simplify_schema(parameters)
        self.model = model
        self.single_model_param = single_model_param
        self.takes_ctx = takes_ctx
        self.timeout = timeout
        self.needs_approval = check_approval_policy(needs_approval, name)
        self._is_async = inspect.iscoroutinefunction(handler)
        functools.update_wrapper(self, handler, updated=())  # type: ignore[arg-type]

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = 60.0,
        needs_approval: ApprovalPolicy = False,
    ) -> FunctionTool:
        """Schema from ``fn``'s signature and docstring."""
        doc_description, doc_params = _split_docstring(fn.__doc__)
        sig = inspect.signature(fn)
        hints = _parameter_hints(fn, sig)
        fields: dict[str, Any] = {}
        takes_ctx = False
        for pname, param in sig.parameters.items():
            annotation = hints.get(pname, Any)
            if annotation is RunContext or pname == "ctx":
                takes_ctx = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigurationError(
                    f"@tool cannot describe *args/**kwargs of {fn.__name__}; "
                    "give every argument a name and a type."
                )
            default = ... if param.default is param.empty else param.default
            fields[pname] = (
                annotation,
                pydantic.Field(default, description=doc_params.get(pname)),
            )
        single = None
        if len(fields) == 1:
            (only, (annotation, _)) = next(iter(fields.items()))
            if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                single = only
        try:
            if single is not None:
                model = fields[single][0]
            else:
                model = pydantic.create_model(f"{fn.__name__}_arguments", **fields)  # type: ignore[call-overload]
            schema = model.model_json_schema()
        except pydantic.PydanticUserError:
            raise _schema_error(fn, fields) from None
        schema.setdefault("properties", {})
        return cls(
            fn,
            name=name or fn.__name__,
            description=description if description is not None else doc_description,
            parameters=schema,
            model=model,
            single_model_param=single,
            takes_ctx=takes_ctx,
            timeout=timeout,
            needs_approval=needs_approval,
        )

    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        kwargs: dict[str, Any] = dict(arguments)
        if self.model is not None:
            # The arguments were validated against the declared schema in parse_arguments
            # (the messages the model reads); the model converts them to the declared Python
            # types, and refuses only what a schema cannot say (a model's own validators).
            # A required-but-nullable field is declared optional to the model; omitted means None.
            for key in (self.parameters or {}).get("properties", {}):
                if key not in kwargs and _field_required(self.model, key):
                    kwargs[key] = None
            try:
                validated = self.model.model_validate(kwargs)
            except pydantic.ValidationError as exc:
                raise ToolArgumentsError(
                    f"arguments for {self.recipient} are invalid: "
                    + "; ".join(
                        f"{'/'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}"
                        for e in exc.errors()
                    )
                ) from None
            if self.single_model_param is not None:
                kwargs = {self.single_model_param: validated}
            else:
                kwargs = {k: getattr(validated, k) for k in type(validated).model_fields}
        if self.takes_ctx:
            kwargs["ctx"] = ctx
        if self._is_async:
            return await self.handler(**kwargs)
        return await anyio.to_thread.run_sync(
            functools.partial(self.handler, **kwargs), abandon_on_cancel=True
        )


def _parameter_hints(fn: Callable[..., Any], sig: inspect.Signature) -> dict[str, Any]:
    """Resolved parameter annotations (the return annotation is not needed, so not evaluated)."""
    raw = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "return"}
    holder = types.SimpleNamespace(__annotations__=raw)
    try:
        return get_type_hints(holder, globalns=getattr(fn, "__globals__", {}), include_extras=True)
    except NameError as exc:
        raise ConfigurationError(
            f"@tool cannot resolve the type of a parameter of {fn.__name__}: {exc}. Define the "
            "types a tool uses at module level (string annotations are resolved there)."
        ) from None


def _schema_error(fn: Callable[..., Any], fields: dict[str, Any]) -> ConfigurationError:
    """Which parameter's type cannot become a JSON schema (the first, tried one by one)."""
    for pname, (annotation, info) in fields.items():
        try:
            pydantic.create_model("probe", **{pname: (annotation, info)}).model_json_schema()  # type: ignore[call-overload]
        except pydantic.PydanticUserError:
            shown = getattr(annotation, "__name__", None) or repr(annotation)
            return ConfigurationError(
                f"@tool {fn.__name__}: the type of parameter {pname!r} ({shown}) cannot become a "
                "JSON schema, which the model needs to call the tool; use JSON-like types (str, "
                "int, float, bool, list, dict, Literal, an Enum, a pydantic model, a dataclass "
                "or TypedDict of those), or pass the schema yourself with @tool(parameters={...})"
            )
    return ConfigurationError(
        f"@tool {fn.__name__}: its parameters cannot become a JSON schema; pass the schema "
        "yourself with @tool(parameters={...})"
    )


def _field_required(model: type[pydantic.BaseModel], key: str) -> bool:
    info = model.model_fields.get(key)
    return info is not None and info.is_required()


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = 60.0,
    needs_approval: ApprovalPolicy = False,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = 60.0,
    needs_approval: ApprovalPolicy = False,
) -> Any:
    """Make a developer function tool from a callable.

    ``@tool`` or ``@tool(name=..., description=..., timeout=..., needs_approval=...)``. With
    ``parameters`` (a raw JSON schema) the signature is not inspected and the handler receives
    the validated arguments as keyword arguments. ``needs_approval``: ``True``, or a callable
    ``(ctx, call) -> bool`` (sync or async) deciding per call; such a call pauses the run
    before it runs (``RunResult.status == "paused"``) until ``Agent.resume`` decides.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        if parameters is not None:
            doc_description, _ = _split_docstring(f.__doc__)
            takes_ctx = "ctx" in inspect.signature(f).parameters
            return FunctionTool(
                f,
                name=name or f.__name__,
                description=description if description is not None else doc_description,
                parameters=parameters,
                takes_ctx=takes_ctx,
                timeout=timeout,
                needs_approval=needs_approval,
            )
        return FunctionTool.from_function(
            f, name=name, description=description, timeout=timeout, needs_approval=needs_approval
        )

    if fn is not None:
        return wrap(fn)
    return wrap
