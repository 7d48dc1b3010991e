"""A Jinja sandbox that also bounds work: operator templates can neither escape nor hang us.

Jinja's SandboxedEnvironment already refuses private attributes (``''.__class__``) and
unsafe callables. Templates come from the provider UI, so we also bound what a hostile
or careless template can cost, per render:

1. steps: every loop iteration, call, filter and intercepted operator costs one step
   (MAX_STEPS per render), and each step checks a wall-clock deadline (MAX_SECONDS);
2. sizes: ``range()`` is capped (MAX_RANGE) and every string or sequence a call, filter,
   ``~``, ``+``, ``*``, ``**`` or ``%`` would build is estimated *before* it is built
   and refused above MAX_TEXT, so no single step allocates without bound;
3. output: the rendered stream is cut off above MAX_OUTPUT characters.

Exceeding a bound raises TemplateLimitError (a jinja2 SecurityError); the renderer then
falls back to the project's default template for that notice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_STEPS = 200_000
MAX_SECONDS = 1.0
MAX_RANGE = 10_000
MAX_TEXT = 500_000
MAX_OUTPUT = 1_000_000
MAX_INT_BITS = 4096

_ITER_FILTER = "_dnl_bounded_iter"
_SIZE_FILTER = "_dnl_bounded_size"


class TemplateLimitError(SecurityError):
    """A template used more steps, time or memory than one mail may cost."""


@dataclass
class _Budget:
    steps: int
    deadline: float


_BUDGET: ContextVar[_Budget | None] = ContextVar("dnl_ad_template_budget", default=None)


def charge(n: int = 1) -> None:
    """Spend n steps of the current render's budget (no-op outside a bounded render)."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps -= n
    if budget.steps < 0:
        raise TemplateLimitError(f"template exceeded {MAX_STEPS} steps (loop or recursion)")
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError(f"template took longer than {MAX_SECONDS} s to render")


def weight(value: Any) -> int:
    """Rough size in characters of what str(value) could become (one level deep)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, Mapping):
        return len(value) + sum(weight(k) + weight(v) for k, v in value.items()
                                if isinstance(k, str | bytes) or isinstance(v, str | bytes))
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) + sum(len(v) for v in value if isinstance(v, str | bytes))
    if isinstance(value, range):
        return len(value)
    return 0


def _refuse_big(what: str, size: int) -> None:
    if size > MAX_TEXT:
        raise TemplateLimitError(f"{what} would build {size} characters (limit {MAX_TEXT})")


def _check_result(what: str, value: Any) -> Any:
    _refuse_big(what, weight(value))
    return value


def _estimate(value: Any, args: Iterable[Any], kwargs: Mapping[str, Any]) -> int:
    """Upper-bound guess of a call's output: input size times argument size plus widths."""
    others = [*args, *kwargs.values()]
    ints = sum(a for a in others if isinstance(a, int) and not isinstance(a, bool) and a > 0)
    seqs = sum(weight(a) for a in others)
    return (1 + weight(value)) * (1 + seqs) + ints


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*\}")


def check_format(fmt: str) -> None:
    """Refuse %- and {}-format strings whose widths could build a huge string."""
    for m in _PERCENT_SPEC.finditer(fmt):
        for group in m.groups():
            if group == "*" or (group and int(group) > MAX_TEXT):
                raise TemplateLimitError(f"format width {group!r} is not allowed")
    if "{" in fmt:
        for m in _BRACE_SPEC.finditer(fmt):
            if any(len(digits) > 5 for digits in re.findall(r"\d+", m.group(0))):
                raise TemplateLimitError(f"format field {m.group(0)!r} is too wide")
        if re.search(r"\{[^{}]*\{", fmt.replace("{{", "").replace("}}", "")):
            raise TemplateLimitError("nested format fields are not allowed")


def _bounded_range(*args: int) -> range:
    charge()
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(rng)} items (limit {MAX_RANGE})")
    return rng


def _bounded_iter(value: Any) -> Iterator[Any]:
    """Wraps every {% for %} iterable: one step per item."""
    for item in value:
        charge()
        yield item


def _bounded_size(value: Any) -> Any:
    charge()
    return _check_result("'~' concatenation", value)


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that charges the render's budget and refuses oversized results."""
    return _guard_filter(name, func)


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)  # keeps jinja_pass_arg (pass_context & co.)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        charge()
        # the filtered value is the first argument not a Jinja context/environment
        values = [a for a in args if not _is_jinja_internal(a)]
        value, rest = (values[0], values[1:]) if values else (None, [])
        if name == "format" and isinstance(value, str):
            check_format(value)
        else:
            _refuse_big(f"filter {name!r}", _estimate(value, rest, kwargs))
        return _check_result(f"filter {name!r}", func(*args, **kwargs))

    return guarded


_JINJA_INTERNALS = (Context, Environment, EvalContext)


def _is_jinja_internal(obj: Any) -> bool:
    return isinstance(obj, _JINJA_INTERNALS)


class _BoundingTransformer(NodeTransformer):
    """Routes every for-loop iterable and every `~` through the bounding filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER_FILTER, [], [], None, None,
                                 lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, _SIZE_FILTER, [], [], None, None, lineno=node.lineno)


class _BoundingCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _BoundingTransformer().visit(node)
        super().visit_Template(node, frame)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus the step, time and size bounds of this module."""

    code_generator_class = _BoundingCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("optimized", False)  # no constant folding of hostile expressions
        super().__init__(**kwargs)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        for name, func in list(self.filters.items()):
            self.filters[name] = _guard_filter(name, func)
        self.filters[_ITER_FILTER] = _bounded_iter
        self.filters[_SIZE_FILTER] = _bounded_size

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        charge()
        if operator == "+":
            _refuse_big("'+'", weight(left) + weight(right))
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and weight(seq):
                    _refuse_big("'*'", weight(seq) * max(n, 0))
            if isinstance(left, int) and isinstance(right, int) and (
                    left.bit_length() + right.bit_length() > MAX_INT_BITS):
                raise TemplateLimitError("integer product too large")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and (
                    abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS):
                raise TemplateLimitError("integer power too large")
        elif operator == "%" and isinstance(left, str):
            check_format(left)
        return _check_result(f"'{operator}'", super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        charge()
        if __obj is not _bounded_range:
            target = getattr(__obj, "__wrapped__", __obj)
            owner = getattr(target, "__self__", None)
            if isinstance(owner, str) and getattr(target, "__name__", "") in (
                    "format", "format_map"):
                check_format(owner)
                _refuse_big("str.format", weight(owner) + sum(weight(a) for a in args))
            else:
                _refuse_big("call", _estimate(owner, args, kwargs))
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_result("call", result)


class FileSandbox(ImmutableSandboxedEnvironment):
    """For the template files in TEMPLATE_DIR: the operator's own files, installed with the
    daemon and as trusted as its ini. Still a sandbox (no private attributes, no unsafe
    calls, no mutation) with a bounded ``range()`` and a capped output (render_capped),
    but without the per-step budget of BoundedSandbox: their loops run over the notice's
    own rows, and the budget checks cost more than the rendering itself (half of a usage
    summary's queueing time, bench/README.md). Templates from the provider's database,
    which anyone with UI access may edit, always go through BoundedSandbox."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range


def render_capped(template: Any, values: dict[str, Any]) -> str:
    """Render a FileSandbox template; an output above MAX_OUTPUT characters is an error
    (checked once rendered: the file is trusted not to build gigabytes, and `range()` is
    bounded).

    `values` must already hold the environment's globals (render.MailConfig.file_globals):
    it is the context as it is, where Template.render would copy it twice per render (a notice
    renders three templates from the same values)."""
    env = template.environment
    try:
        text = env.concat(template.root_render_func(template.new_context(values,
                                                                         shared=True)))
    except Exception:
        env.handle_exception()  # raises, pointing at the template's line, as render()
    if len(text) > MAX_OUTPUT:
        raise TemplateLimitError(f"template output exceeds {MAX_OUTPUT} characters")
    return text


def render_bounded(template: Any, values: Mapping[str, Any]) -> str:
    """Render with a fresh budget; the output is cut off (error) above MAX_OUTPUT."""
    token = _BUDGET.set(_Budget(MAX_STEPS, time.monotonic() + MAX_SECONDS))
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(values):
            charge()
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateLimitError(f"template output exceeds {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _BUDGET.reset(token)
