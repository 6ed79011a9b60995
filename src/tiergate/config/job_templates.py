"""Job prompts are Jinja templates rendered in Jinja's sandbox: checked when the config loads, rendered per run.

The sandbox refuses attribute access that reaches Python internals
(``{{ ''.__class__ }}``), so a template written by one operator, or text an
input brought in, cannot run code. Undefined names are errors naming the
name (StrictUndefined), not silently empty prompts; the rendered text is
bounded so one input cannot make a prompt of unbounded size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED_CHARS = 1_000_000


class TemplateFailed(ValueError):
    """The template could not be rendered: an undefined name, an unsafe access, a result too large."""


def environment() -> ImmutableSandboxedEnvironment:
    """A fresh sandbox (no shared state between apps): no autoescape, prompts are plain text."""
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def template_problem(source: str) -> str | None:
    """None when ``source`` parses, else what is wrong and on which line."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    return None


def render(source: str, context: Mapping[str, Any], *, max_chars: int = MAX_RENDERED_CHARS) -> str:
    """The rendered text, or ``TemplateFailed`` saying why (never a Python traceback into a prompt)."""
    try:
        text = environment().from_string(source).render(**context)
    except TemplateError as exc:  # UndefinedError, SecurityError, syntax: all Jinja's own
        raise TemplateFailed(f"{type(exc).__name__}: {exc.message or exc}") from None
    except (ValueError, TypeError, ArithmeticError, LookupError) as exc:  # a filter given the wrong kind of value
        raise TemplateFailed(f"{type(exc).__name__}: {exc}") from None
    if len(text) > max_chars:
        raise TemplateFailed(f"rendered prompt is {len(text)} characters; the limit is {max_chars}")
    return text
