"""The notifier's message templates: one directory per template name, one per locale inside it.

    templates/<name>/<locale>/subject.txt   one line once rendered (newlines are collapsed)
    templates/<name>/<locale>/body.txt      plain text, not escaped
    templates/<name>/<locale>/body.html     HTML, data escaped
    templates/<name>/sample.json            sample data for the preview endpoint

Directories whose name starts with ``_`` hold shared pieces (the e-mail layout and the text
footer) that templates extend or include; they are not templates themselves. A block tag on a
line of its own leaves no blank line (``trim_blocks``, ``lstrip_blocks``); a tag that ends a line
of text takes that line's newline with it, so choose words inside a line with an expression,
``{{ "one year" if years == 1 else years ~ " years" }}``.

Templates are rendered in Jinja's immutable sandbox with strict undefined variables: a template
that uses a variable the action's data lacks, or that tries to reach outside the sandbox, raises
:class:`TemplateError` (a permanent delivery failure) instead of sending a half-empty message.
Every file is compiled once, when the store is created; a :class:`Templates` may then be shared
between threads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.notifier.errors import PermanentDeliveryError
from shared.events.actions import ActionMessage
from shared.templates import TEMPLATE_ROOT

DEFAULT_ROOT = TEMPLATE_ROOT
FILES = ("subject.txt", "body.txt", "body.html")
SAMPLE_FILE = "sample.json"
# the notifier's own variables: None unless it passes them in ``extra``, never taken from data
EXTRA_DEFAULTS: Mapping[str, Any] = {"unsubscribe_url": None, "recipient_name": None}


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message ready for a channel: a one-line subject, a plain-text and an HTML body."""

    subject: str
    text: str
    html: str


class TemplateError(PermanentDeliveryError):
    """A message cannot be rendered: ``unknown_template``, or ``template_error`` (a missing
    variable, a sandbox violation, a syntax error, a missing file or sample)."""


def _normalise(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


class Templates:
    """The template store under ``root``; ``default_locale`` is the last resort of
    :meth:`resolve_locale`. The directory is read and compiled once, at construction, which
    raises :class:`TemplateError` if a locale lacks one of :data:`FILES` or a file does not
    compile."""

    def __init__(self, root: Path = DEFAULT_ROOT, default_locale: str = "en") -> None:
        self._root = root
        self._default_locale = default_locale
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(root, encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",),
                disabled_extensions=("txt",),
                default_for_string=False,
                default=False,
            ),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,  # keep every compiled template; there are few
        )
        self._catalogue = self._scan(root)
        self._compiled = self._compile_all()

    def _compile_all(self) -> dict[str, jinja2.Template]:
        """Compile every file once, so a broken template stops the service at start-up and
        rendering never reads the disk. The environment's own cache keeps the shared pieces
        for ``extends`` and ``include``; nothing is compiled after this, so threads can share
        the store without a lock."""
        compiled: dict[str, jinja2.Template] = {}
        try:
            for shared in self._env.list_templates(extensions=("txt", "html")):
                if shared.startswith("_"):
                    self._env.get_template(shared)
            for name, locales in self._catalogue.items():
                for locale in locales:
                    for file in FILES:
                        path = f"{name}/{locale}/{file}"
                        compiled[path] = self._env.get_template(path)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError("template_error", f"missing template file {exc.name}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                "template_error", f"{exc.name or exc.filename}:{exc.lineno}: {exc.message}"
            ) from exc
        return compiled

    @staticmethod
    def _scan(root: Path) -> dict[str, list[str]]:
        catalogue: dict[str, list[str]] = {}
        if not root.is_dir():
            return catalogue
        for template in sorted(p for p in root.iterdir() if p.is_dir()):
            if template.name.startswith(("_", ".")):
                continue
            locales = sorted(p.name for p in template.iterdir() if p.is_dir())
            if locales:
                catalogue[template.name] = locales
        return catalogue

    def names(self) -> list[str]:
        """Every template name, sorted."""
        return list(self._catalogue)

    def locales(self, name: str) -> list[str]:
        """The locales ``name`` is written in, sorted."""
        try:
            return list(self._catalogue[name])
        except KeyError:
            raise TemplateError("unknown_template", f"no template named {name!r}") from None

    def resolve_locale(self, name: str, locale: str) -> str:
        """The locale to render ``name`` in for a recipient who reads ``locale``: the exact
        locale, else its language ("zh-CN" → "zh"), else any variant of that language
        ("zh-*"), else the same steps for the default locale, else the first one there is."""
        available = self.locales(name)
        for wanted in (locale, self._default_locale):
            found = self._match(available, wanted)
            if found is not None:
                return found
        return available[0]

    @staticmethod
    def _match(available: list[str], locale: str) -> str | None:
        by_key = {_normalise(a): a for a in available}
        wanted = _normalise(locale)
        if not wanted:
            return None
        if wanted in by_key:
            return by_key[wanted]
        language = wanted.split("-", 1)[0]
        if language in by_key:
            return by_key[language]
        variants = [a for key, a in sorted(by_key.items()) if key.startswith(f"{language}-")]
        return variants[0] if variants else None

    def render(
        self,
        name: str,
        locale: str,
        data: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Rendered:
        """Render ``name`` for ``locale`` (resolved as :meth:`resolve_locale` does) with the
        action's ``data`` and the notifier's ``extra`` variables (``unsubscribe_url``,
        ``recipient_name``, both None unless given; data cannot set them)."""
        resolved = self.resolve_locale(name, locale)
        context = {**data, **EXTRA_DEFAULTS, **(extra or {})}
        subject, text, html = (self._render_file(name, resolved, f, context) for f in FILES)
        return Rendered(subject=" ".join(subject.split()), text=text, html=html)

    def render_action(
        self,
        action: ActionMessage,
        locale: str,
        recipient_name: str | None,
        unsubscribe_url: str | None = None,
    ) -> Rendered:
        """An action's message: its template with its data, for its recipient."""
        extra = {"unsubscribe_url": unsubscribe_url, "recipient_name": recipient_name}
        return self.render(action.template, locale, action.data, extra)

    def sample(self, name: str) -> dict[str, Any]:
        """Sample data for previewing ``name``, from its ``sample.json``."""
        self.locales(name)  # unknown_template
        path = self._root / name / SAMPLE_FILE
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TemplateError(
                "template_error", f"{name}: unreadable {SAMPLE_FILE}: {exc}"
            ) from exc
        if not isinstance(loaded, dict):
            raise TemplateError("template_error", f"{name}: {SAMPLE_FILE} is not an object")
        return loaded

    def _render_file(self, name: str, locale: str, file: str, context: Mapping[str, Any]) -> str:
        where = f"template {name!r}, locale {locale!r}, {file}"
        template = self._compiled[f"{name}/{locale}/{file}"]
        try:
            return template.render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateError("template_error", f"{where}: missing variable: {exc}") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError("template_error", f"{where}: sandbox violation: {exc}") from exc
        except jinja2.TemplateError as exc:  # e.g. an include that is not there
            raise TemplateError("template_error", f"{where}: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError) as exc:  # data of an unexpected type
            raise TemplateError("template_error", f"{where}: {type(exc).__name__}: {exc}") from exc
