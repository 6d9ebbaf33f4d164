"""Sandboxed, bounded Jinja2 rendering.

Templates are written by operators over the API, so they are untrusted code.
Jinja2's ``ImmutableSandboxedEnvironment`` already blocks attribute walks
(``''.__class__.__mro__``) and mutation of lists and dicts; this module adds
what the sandbox lacks: bounds on time, loop iterations and output size.

How the bounds work (cooperative, no thread is ever killed):

* A code generator subclass routes every ``{% for %}`` iterable through
  ``environment.guard_iter`` (counts iterations against
  ``max_loop_iterations`` and checks the deadline), every piece of output
  (also into ``{% set %}`` blocks, macros and filter blocks) through
  ``environment.guard_out`` (counts every character produced), and every
  ``~`` concatenation through ``environment.guard_concat``.
* Every call, filter and the operators ``*``, ``**``, ``%`` and ``+`` check
  the deadline; those that can multiply their input in one C-level step
  (``'x' * n``, ``center(n)``, ``replace('', big)``, ``join``, printf and
  ``str.format`` widths, huge powers) are refused *before* they run, and any
  result larger than the output limit is refused after.
* ``lipsum`` is gone, ``range`` is capped by the loop limit, and
  ``translate``/``maketrans``/``expandtabs`` are unavailable.

A runaway template therefore stops at the first loop step, call or output
after its deadline, and no single step can allocate much more than the output
limit. Rendering runs in a worker thread (see ``service.py``) so the event
loop keeps serving while a slow template burns its budget.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.lexer import Token, TokenStream
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace

#: Largest integer (in bits) an operator may produce: ~1200 decimal digits.
MAX_INT_BITS = 4096
#: Largest field width or precision in printf-style and ``str.format`` specs.
MAX_FORMAT_WIDTH = 10_000
#: Every character output, including into ``{% set %}`` blocks and macros,
#: may be produced this many times over the final output limit.
PRODUCED_FACTOR = 8
_UNAVAILABLE_STR_METHODS = frozenset({"translate", "maketrans", "expandtabs"})
_PRINTF_RE = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


class LimitExceeded(Exception):
    """A render crossed one of its bounds (``kind``: time, loop, output, size)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 2.0
    max_output_chars: int = 1_000_000
    max_loop_iterations: int = 100_000


class _Budget:
    __slots__ = ("deadline", "iterations", "produced", "outputs", "limits", "max_produced")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_seconds
        self.iterations = 0
        self.produced = 0
        self.outputs = 0
        self.max_produced = limits.max_output_chars * PRODUCED_FACTOR

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded("time", f"rendering took longer than {self.limits.timeout_seconds:g}s")


class _RenderState(threading.local):
    budget: _Budget | None = None  # set for the duration of one render, per thread


_local = _RenderState()


def _budget() -> _Budget | None:
    return _local.budget


def _tick() -> None:
    b = _local.budget
    if b is not None:
        b.check_time()


def _too_large(what: str, size: int, limit: int) -> LimitExceeded:
    return LimitExceeded("size", f"{what} would be {size} long; the limit is {limit}")


class GuardedCodeGenerator(CodeGenerator):
    """Emits calls to the environment's guards around loops, output and ``~``."""

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        # Jinja2 forbids custom node types, so the loop's iterable is marked
        # and wrapped when ``visit`` reaches it.
        guarded = self.__dict__.setdefault("_guarded_iters", set())
        guarded.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        guarded = self.__dict__.get("_guarded_iters")
        if guarded and id(node) in guarded:
            self.write("environment.guard_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.guard_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
        self.write("environment.guard_out(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: Any, frame: Any, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.guard_out({super()._output_const_repr(group)})"


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


def _check_format_spec(fmt: str) -> None:
    """Refuse ``str.format`` specs with huge or dynamic widths."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call raises a clear ValueError
    for _literal, _field, spec, _conv in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise LimitExceeded("size", "format specs with nested fields ({:{width}}) are not allowed")
        for digits in re.findall(r"\d+", spec):
            if len(digits) > 6 or int(digits) > MAX_FORMAT_WIDTH:
                raise LimitExceeded("size", f"format width {digits} exceeds {MAX_FORMAT_WIDTH}")


def _check_printf(fmt: str) -> None:
    for width, precision in _PRINTF_RE.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise LimitExceeded("size", "'*' widths in %-formatting are not allowed")
            if n and (len(n) > 6 or int(n) > MAX_FORMAT_WIDTH):
                raise LimitExceeded("size", f"format width {n} exceeds {MAX_FORMAT_WIDTH}")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox with time, loop and size bounds (see module doc)."""

    code_generator_class = GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, limits: Limits, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, loader=None, auto_reload=False, cache_size=0)
        self.limits = limits
        self.globals.clear()
        self.globals.update(range=self.guarded_range, dict=dict, namespace=Namespace, cycler=Cycler, joiner=Joiner)
        self.filters = {name: self._wrap_filter(name, func) for name, func in self.filters.items()}
        self._self_check()

    def _self_check(self) -> None:
        # The guards hook into code-generator internals; refuse to run with a
        # Jinja2 whose generator no longer calls them.
        src = self.compile("{% for x in y %}{{ x ~ 'a' }}{% endfor %}", raw=True)
        for guard in ("guard_iter(", "guard_out(", "guard_concat("):
            if f"environment.{guard}" not in src:
                raise RuntimeError(f"this Jinja2 version bypasses the sandbox guard {guard[:-1]}; pin Jinja2 3.1")

    # -- guards called from generated code ------------------------------------------

    def guarded_range(self, *args: int) -> range:
        rng = range(*args)
        if len(rng) > self.limits.max_loop_iterations:
            raise LimitExceeded(
                "loop", f"range() of {len(rng)} items exceeds the loop limit of {self.limits.max_loop_iterations}"
            )
        return rng

    def guard_iter(self, iterable: Any) -> Any:
        b = _budget()
        if b is None:
            return iterable
        return _counted(iterable, b)

    def guard_out(self, value: Any) -> Any:
        b = _local.budget
        if b is not None:
            b.produced += len(value)
            if b.produced > b.max_produced:
                raise LimitExceeded("output", f"the template produced more than {b.max_produced} characters")
            b.outputs += 1
            if not b.outputs & 0x3F:  # the clock every 64 outputs; calls and loops check it too
                b.check_time()
        return value

    def guard_concat(self, join: Any, parts: tuple[Any, ...]) -> Any:
        limit = self.limits.max_output_chars
        total = sum(len(p) for p in parts if isinstance(p, str))
        if total > limit:
            raise _too_large("a ~ concatenation", total, limit)
        out = join(parts)
        if len(out) > limit:
            raise _too_large("a ~ concatenation", len(out), limit)
        return out

    # -- sandbox hooks ----------------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNAVAILABLE_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__
        limit = self.limits.max_output_chars

        @functools.wraps(wrapper)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _tick()
            _check_format_spec(fmt)
            out = wrapper(*args, **kwargs)
            if len(out) > limit:
                raise _too_large("a formatted string", len(out), limit)
            return out

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        args = __self._precheck_method(__obj, args, kwargs)
        rv = super().call(__context, __obj, *args, **kwargs)
        size = _size(rv)
        if size > __self.limits.max_output_chars:
            raise _too_large("a call's result", size, __self.limits.max_output_chars)
        return rv

    def _precheck_method(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Refuse method calls that would build a huge value in one step."""
        limit = self.limits.max_output_chars
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", "")
        if isinstance(owner, str):
            if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
                if args[0] > limit:
                    raise _too_large(f"str.{name}()", args[0], limit)
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1], limit)
            elif name == "join" and args:
                items = list(_counted(args[0], _budget()) if _budget() else args[0])
                _check_join(owner, items, limit)
                return (items, *args[1:])
            return args
        if owner is None or type(owner).__module__ != "builtins":
            return args  # macros, globals and our own guards
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
                raise LimitExceeded("size", f"argument {value} exceeds the limit of {limit}")
        return args

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        limit = self.limits.max_output_chars
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and n * len(seq) > limit:
                    raise _too_large("a repetition", n * len(seq), limit)
            both_int = isinstance(left, int) and isinstance(right, int)
            if both_int and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise LimitExceeded("size", f"the product exceeds {MAX_INT_BITS} bits")
        elif operator == "**":
            growing = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
            if growing and abs(left).bit_length() * right > MAX_INT_BITS:
                raise LimitExceeded("size", f"the power exceeds {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        rv = super().call_binop(context, operator, left, right)
        if _size(rv) > limit:
            raise _too_large(f"the result of {operator!r}", _size(rv), limit)
        return rv

    # -- filters ----------------------------------------------------------------------

    def _wrap_filter(self, name: str, func: Any) -> Any:
        pre = _FILTER_PRECHECKS.get(name)
        # Filters marked pass_context/pass_environment get that argument first.
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        limits = self.limits

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            _tick()
            if pre is not None:
                args = pre(limits, args[skip:], kwargs, args[:skip])
            rv = func(*args, **kwargs)
            size = _size(rv)
            if size > limits.max_output_chars:
                raise _too_large(f"the |{name} filter's result", size, limits.max_output_chars)
            return rv

        return guarded


def _counted(iterable: Any, b: _Budget) -> Iterator[Any]:
    limit = b.limits.max_loop_iterations
    for item in iterable:
        b.iterations += 1
        if b.iterations > limit:
            raise LimitExceeded("loop", f"loops ran more than {limit} iterations")
        if not b.iterations & 0x3FF:
            b.check_time()
        yield item


def _check_replace(s: str, old: Any, new: Any, limit: int) -> None:
    if not isinstance(old, str) or not isinstance(new, str):
        return
    occurrences = len(s) + 1 if old == "" else s.count(old)
    size = len(s) + occurrences * len(new)
    if size > limit:
        raise _too_large("replace()", size, limit)


def _check_join(sep: str, items: list[Any], limit: int) -> None:
    size = len(sep) * max(0, len(items) - 1) + sum(len(i) for i in items if isinstance(i, str))
    if size > limit:
        raise _too_large("join()", size, limit)


def _pre_center(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    width = args[1] if len(args) > 1 else kwargs.get("width", 80)
    if isinstance(width, int) and width > limits.max_output_chars:
        raise _too_large("|center", width, limits.max_output_chars)
    return head + args


def _pre_indent(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    value = args[0] if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    w = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
    text = str(value)
    size = len(text) + w * (text.count("\n") + 1)
    if size > limits.max_output_chars:
        raise _too_large("|indent", size, limits.max_output_chars)
    return head + args


def _pre_wordwrap(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    text = str(args[0]) if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 79)
    wrapstring = args[3] if len(args) > 3 else kwargs.get("wrapstring")
    lines = text.count("\n") + 1 + len(text) // max(1, width if isinstance(width, int) else 1)
    size = len(text) + lines * len(wrapstring or "\n")
    if size > limits.max_output_chars:
        raise _too_large("|wordwrap", size, limits.max_output_chars)
    return head + args


def _pre_count_arg(index: int, key: str, cap_attr: str | None = None, cap: int | None = None) -> Any:
    def pre(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
        n = args[index] if len(args) > index else kwargs.get(key)
        bound = cap if cap is not None else getattr(limits, cap_attr or "max_output_chars")
        if isinstance(n, int) and n > bound:
            raise LimitExceeded("size", f"{key}={n} exceeds the limit of {bound}")
        return head + args

    return pre


def _pre_replace(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    if len(args) >= 3:
        _check_replace(str(args[0]), args[1], args[2], limits.max_output_chars)
    return head + args


def _pre_join(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    if not args:
        return head + args
    b = _budget()
    items = list(_counted(args[0], b) if b is not None else args[0])
    sep = args[1] if len(args) > 1 else kwargs.get("d", "")
    attribute = args[2] if len(args) > 2 else kwargs.get("attribute")
    if isinstance(sep, str) and attribute is None:
        _check_join(sep, items, limits.max_output_chars)
    return (*head, items, *args[1:])


def _pre_format(limits: Limits, args: tuple, kwargs: dict, head: tuple) -> tuple:
    if args and isinstance(args[0], str):
        _check_printf(args[0])
    return head + args


_FILTER_PRECHECKS = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "batch": _pre_count_arg(1, "linecount"),
    "slice": _pre_count_arg(1, "slices", cap=1000),
    "replace": _pre_replace,
    "join": _pre_join,
    "format": _pre_format,
}


# -- compile-time checks --------------------------------------------------------------


@dataclass(frozen=True)
class SourceProblem:
    """A problem found when a template part is saved; ``line``/``column`` are 1-based."""

    message: str
    line: int | None = None
    column: int | None = None


def _column(source: str, lineno: int | None, needle: str | None) -> int | None:
    if lineno is None:
        return None
    lines = source.splitlines() or [""]
    if lineno > len(lines):
        return len(lines[-1]) + 1
    line = lines[lineno - 1]
    if needle:
        idx = line.find(needle)
        if idx >= 0:
            return idx + 1
    for opener in ("{{", "{%", "{#"):
        idx = line.find(opener)
        if idx >= 0:
            return idx + 1
    return len(line) - len(line.lstrip()) + 1


def _line_col_from_offset(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _positioned(env: Any, source: str, norm: str, offsets: dict[int, int]) -> Iterator[Token]:
    """The lexer's tokens, recording each one's offset in ``norm`` (by id).

    Jinja2 tokens carry only a line number; every raw token value is a
    substring of the normalised source in order, so a forward search finds
    where each one starts.
    """
    current = {"offset": 0}

    def raw() -> Iterator[tuple[int, str, str]]:
        pos = 0
        try:
            for lineno, kind, value in env.lexer.tokeniter(source, None):
                idx = norm.find(value, pos) if value else pos
                current["offset"] = idx if idx >= 0 else pos
                pos = current["offset"] + len(value)
                yield lineno, kind, value
        except TemplateSyntaxError:
            # The lexer failed right after the last token it produced.
            while pos < len(norm) and norm[pos] in " \t":
                pos += 1
            offsets[-1] = pos
            raise

    keep: list[Token] = []  # ids stay unique while the tokens are alive
    for token in env.lexer.wrap(raw()):
        offsets[id(token)] = current["offset"]
        keep.append(token)
        yield token


def _syntax_problem(
    source: str, exc: TemplateSyntaxError, token: Any = None, offset: int | None = None
) -> SourceProblem:
    message = exc.message or str(exc)
    at = re.search(r" at (\d+)$", message)
    if at:  # lexer errors carry an absolute offset
        line, col = _line_col_from_offset(source, int(at.group(1)))
        return SourceProblem(message[: at.start()], line, col)
    if offset is not None and (token is None or token.type != "eof"):
        line, col = _line_col_from_offset(source, offset)
        return SourceProblem(message, line, col)
    unclosed = re.search(r"innermost block that needs to be closed is '(\w+)'", message)
    if unclosed:  # point at the block that is never closed, not at the end of the file
        opened = list(re.finditer(r"\{%-?\s*" + unclosed.group(1) + r"\b", source))
        if opened:
            line, col = _line_col_from_offset(source, opened[-1].start())
            return SourceProblem(message, line, col)
    quoted = re.findall(r"'([^']+)'", message)
    needle = quoted[-1] if quoted else None
    return SourceProblem(message, exc.lineno, _column(source, exc.lineno, needle))


def _static_problems(source: str, ast: nodes.Template) -> list[SourceProblem]:
    out: list[SourceProblem] = []
    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        word = {"Extends": "extends", "Include": "include", "Import": "import", "FromImport": "from"}[
            type(node).__name__
        ]
        out.append(
            SourceProblem(
                f"'{word}' is not allowed: templates cannot load other templates or modules",
                node.lineno,
                _column(source, node.lineno, word),
            )
        )
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = (
            node.attr
            if isinstance(node, nodes.Getattr)
            else (node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        )
        if attr is not None and attr.startswith("_"):
            out.append(
                SourceProblem(
                    f"attribute {attr!r} is not allowed: names starting with '_' are internal",
                    node.lineno,
                    _column(source, node.lineno, attr),
                )
            )
    for node in ast.find_all(nodes.Name):
        if node.name.startswith("_"):
            out.append(
                SourceProblem(
                    f"name {node.name!r} is not allowed", node.lineno, _column(source, node.lineno, node.name)
                )
            )
    return out


# -- the sandbox --------------------------------------------------------------------


@dataclass
class RenderFailure(Exception):
    """A render failed; ``kind`` is undefined, unsafe, limit or error."""

    kind: str
    message: str
    part: str
    line: int | None = None
    variable: str | None = None
    limit: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class _Cache:
    size: int
    items: OrderedDict[tuple[bool, str], Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TemplateSandbox:
    """Compiles, checks and renders template sources within :class:`Limits`.

    Thread-safe: compiled templates are cached by (autoescape, source hash);
    renders keep their budget in a thread-local.
    """

    def __init__(self, limits: Limits, cache_size: int = 512) -> None:
        self.limits = limits
        self.html_env = BoundedEnvironment(limits, autoescape=True)
        self.text_env = BoundedEnvironment(limits, autoescape=False)
        self._cache = _Cache(cache_size)

    def _env(self, html: bool) -> BoundedEnvironment:
        return self.html_env if html else self.text_env

    def parse(self, source: str, *, html: bool = False) -> tuple[nodes.Template | None, list[SourceProblem]]:
        """The AST of ``source`` and its problems (syntax, imports, ``_`` names)."""
        env = self._env(html)
        parser = Parser(env, source)
        offsets: dict[int, int] = {}
        norm = "\n".join(re.split(r"\r\n|\r|\n", source))
        parser.stream = TokenStream(_positioned(env, source, norm, offsets), None, None)
        try:
            ast = parser.parse()
        except TemplateSyntaxError as exc:
            token = parser.stream.current
            offset = offsets[-1] if -1 in offsets else offsets.get(id(token))
            return None, [_syntax_problem(norm, exc, None if -1 in offsets else token, offset)]
        return ast, _static_problems(norm, ast)

    def check(self, source: str, *, html: bool) -> list[SourceProblem]:
        """Problems that stop ``source`` from being saved; compiles and caches it when clean."""
        ast, problems = self.parse(source, html=html)
        if problems or ast is None:
            return problems
        try:
            self._compile(source, html, ast)
        except TemplateSyntaxError as exc:  # unknown filters and tests
            return [_syntax_problem(source, exc)]
        return []

    def _compile(self, source: str, html: bool, ast: nodes.Template | None = None) -> Any:
        key = (html, hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest())
        cache = self._cache
        with cache.lock:
            tpl = cache.items.get(key)
            if tpl is not None:
                cache.items.move_to_end(key)
                return tpl
        if ast is None:
            ast, problems = self.parse(source, html=html)
            if problems or ast is None:
                p = problems[0]
                raise RenderFailure("error", f"line {p.line}: {p.message}", "", line=p.line)
        tpl = self._env(html).from_string(ast)
        with cache.lock:
            cache.items[key] = tpl
            while len(cache.items) > cache.size:
                cache.items.popitem(last=False)
        return tpl

    def render(self, parts: dict[str, tuple[str, bool]], variables: dict[str, Any]) -> dict[str, str]:
        """Render each ``name -> (source, html)`` with one shared time budget.

        Synchronous and CPU-bound: call it from a worker thread. Raises
        :class:`RenderFailure`.
        """
        budget = _Budget(self.limits)
        _local.budget = budget
        out: dict[str, str] = {}
        try:
            for part, (source, html) in parts.items():
                out[part] = self._render_one(part, source, html, variables, budget)
        finally:
            _local.budget = None
        return out

    def _render_one(self, part: str, source: str, html: bool, variables: dict[str, Any], budget: _Budget) -> str:
        limit = self.limits.max_output_chars
        try:
            tpl = self._compile(source, html)
            # guard_out has bounded everything produced, so joining is safe;
            # the part's own limit is checked on the result.
            out = tpl.render(variables)
            if len(out) > limit:
                raise LimitExceeded("output", f"the output is {len(out)} characters; the limit is {limit}")
            budget.check_time()
            return out
        except RenderFailure as exc:
            exc.part = part
            raise
        except LimitExceeded as exc:
            raise RenderFailure("limit", str(exc), part, _template_line(exc), limit=exc.kind) from None
        except UndefinedError as exc:
            message = exc.message or str(exc)
            m = re.match(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", message)
            if isinstance(exc, SecurityError) or "unsafe" in message:
                raise RenderFailure("unsafe", message, part, _template_line(exc)) from None
            raise RenderFailure(
                "undefined", message, part, _template_line(exc), variable=m.group(1) if m else None
            ) from None
        except SecurityError as exc:
            raise RenderFailure("unsafe", str(exc), part, _template_line(exc)) from None
        except RecursionError:
            raise RenderFailure("limit", "the template recursed too deeply", part, limit="recursion") from None
        except MemoryError:
            raise RenderFailure("limit", "the template ran out of memory", part, limit="size") from None
        except Exception as exc:  # noqa: BLE001 - any template runtime error is the template's fault
            raise RenderFailure("error", f"{type(exc).__name__}: {exc}", part, _template_line(exc)) from None

    def variables(self, source: str) -> dict[str, set[str]]:
        """Top-level variables ``source`` reads, each with the dotted paths used."""
        ast, problems = self.parse(source)
        if ast is None:
            return {}
        from jinja2 import meta

        names = meta.find_undeclared_variables(ast)
        paths: dict[str, set[str]] = {n: set() for n in names}
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            chain: list[str] = []
            cur: Any = node
            while isinstance(cur, (nodes.Getattr, nodes.Getitem)):
                if isinstance(cur, nodes.Getattr):
                    chain.append(cur.attr)
                elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, (str, int)):
                    chain.append(str(cur.arg.value))
                else:
                    chain = []
                cur = cur.node
            if isinstance(cur, nodes.Name) and cur.name in names and chain:
                paths[cur.name].add(".".join([cur.name, *reversed(chain)]))
        # Keep only the longest paths: user.address.city implies user.address.
        for name, found in paths.items():
            paths[name] = {p for p in found if not any(o != p and o.startswith(p + ".") for o in found)}
        return paths


def _template_line(exc: BaseException) -> int | None:
    """The template line of the innermost template frame in ``exc``'s traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
