"""Sphinx directives that generate ltjax's reference pages from the code, so the pages cannot drift from it.

- ``.. ltjax-module:: ltjax.losses``: a module's page: its docstring, a summary table and an entry for every public
  name, then a section per public submodule (recursively). A name is public when it is in the module's ``__all__``
  or, for a module without one, when the module defines it (a top-level ``def``, ``class`` or assignment) and it
  does not start with ``_``; a module is public when no part of its dotted name starts with ``_``. A name that a
  package re-exports in its ``__all__`` is documented there once, and its defining module links to that entry.
- ``.. ltjax-config-keys::``: every key of an experiment config, read from ``ltjax.configs.schema``,
  ``ltjax.datasets`` and the method registry.
- ``.. ltjax-method:: ffds``: one method of the registry: summary, phases, head, state and hooks, keys, notes, and
  the references and differences from the reference code that its losses' docstrings state.
- ``.. ltjax-methods-table::``: every method of the registry in one table, linking to its page.
- ``.. ltjax-source:: ../ltjax/losses/ffds.py ffds_loss``: a definition quoted from the repository as it is.
- ``.. ltjax-markdown:: ../README.md``: a Markdown file (the README, CONTRIBUTING) rendered as reStructuredText, for
  the subset of Markdown those files use: headings, paragraphs, lists, fenced code, pipe tables, inline code,
  emphasis and links.

And how docstrings read: the default role ``ltjax-code`` (code in single backticks, as the docstrings write it)
links a dotted name to its object and shows anything else as code; a module docstring's Markdown-style indented
code block becomes a literal block; a constant without a doc comment shows no docstring rather than its type's; a
NamedTuple's fields are left to its docstring's ``Attributes:``.
"""
from __future__ import annotations

import ast
import dis
import functools
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re
import textwrap
import types
from collections import defaultdict

from docutils import nodes, utils
from docutils.parsers.rst import directives
from sphinx.domains.python import PyXRefRole
from sphinx.util.docutils import SphinxDirective

ROOT_PACKAGE = "ltjax"
# Section underlines by depth: the page title, its submodules, theirs.
_UNDERLINES = "=-~^\"'"
# A value whose repr is longer than this is not shown (registries, dicts of records).
_MAX_VALUE_REPR = 100


# --- public modules and names ----------------------------------------------------------------------------------


def is_public_module(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


@functools.cache
def public_modules() -> tuple[str, ...]:
    """Every public module of the package, sorted, the package itself first."""
    package = importlib.import_module(ROOT_PACKAGE)
    names = [ROOT_PACKAGE] + [info.name for info in pkgutil.walk_packages(package.__path__, ROOT_PACKAGE + ".")]
    return tuple(sorted(name for name in names if is_public_module(name)))


def submodules(name: str) -> list[str]:
    """The public modules directly below `name`."""
    depth = name.count(".") + 1
    return [other for other in public_modules() if other.startswith(name + ".") and other.count(".") == depth]


def _bound_names(statements) -> list[str]:
    """Names bound by top-level statements (defs, classes, assignments; inside `if` and `try` too), imports left
    out: what a module defines."""
    found = []
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append(statement.name)
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                found += [node.id for node in ast.walk(target) if isinstance(node, ast.Name)]
        elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)) and isinstance(statement.target, ast.Name):
            found.append(statement.target.id)
        elif isinstance(statement, ast.If):
            found += _bound_names(statement.body) + _bound_names(statement.orelse)
        elif isinstance(statement, ast.Try):
            found += _bound_names(statement.body) + _bound_names(statement.orelse) + _bound_names(statement.finalbody)
            for handler in statement.handlers:
                found += _bound_names(handler.body)
    return found


@functools.cache
def defined_names(module_name: str) -> tuple[str, ...]:
    """The public names `module_name`'s source defines, in source order."""
    module = importlib.import_module(module_name)
    source = pathlib.Path(module.__file__).read_text(encoding="utf-8")
    names = dict.fromkeys(_bound_names(ast.parse(source).body))
    return tuple(name for name in names if not name.startswith("_") and hasattr(module, name))


@functools.cache
def public_names(module_name: str) -> tuple[str, ...]:
    """`__all__` where the module has one, else the public names it defines."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return tuple(module.__all__)
    return defined_names(module_name)


@functools.cache
def homes() -> dict[tuple[str, str], str]:
    """`(module, name) -> module` whose page documents that name in full.

    A name a module defines is documented in the shortest ancestor package that re-exports the same object in its
    `__all__` (`ltjax.losses.ffds_loss` rather than `ltjax.losses.ffds.ffds_loss`), else in the defining module. A
    name a module only re-exports is documented where it is defined, if that is a public module, else in the
    shortest module that lists it.
    """
    holders = defaultdict(list)  # (name, id(object)) -> modules that make the name public
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            holders[name, id(getattr(module, name))].append(module_name)
    result = {}
    for (name, _), modules in holders.items():
        definers = [module for module in modules if name in defined_names(module)]
        if len(definers) > 1:  # distinct definitions that happen to be one object (a small int): no sharing
            result.update({(module, name): module for module in modules})
            continue
        if definers:
            definer = definers[0]
            packages = [module for module in modules if definer.startswith(module + ".")]
            home = min(packages, key=lambda module: module.count(".")) if packages else definer
        else:
            home = min(modules, key=lambda module: (module.count("."), module))
        result.update({(module, name): home for module in modules})
    return result


def _kind(value) -> str:
    if inspect.isclass(value):
        return "exception" if issubclass(value, BaseException) else "class"
    if inspect.isfunction(value) or inspect.isbuiltin(value) or isinstance(value, functools.partial):
        return "function"
    return "data"


def _show_value(value) -> bool:
    try:
        return len(repr(value)) <= _MAX_VALUE_REPR and not callable(value)
    except Exception:  # a repr that fails: show nothing
        return False


# --- the module directive --------------------------------------------------------------------------------------


def _title(text: str, depth: int) -> list[str]:
    return [text, _UNDERLINES[depth] * len(text), ""]


def module_rst(module_name: str, depth: int = 0) -> list[str]:
    """The reStructuredText of a module's section (see the module docstring)."""
    module = importlib.import_module(module_name)
    lines = _title(f"``{module_name}``", depth)
    lines += [f".. automodule:: {module_name}", "   :no-members:", ""]
    names = public_names(module_name)
    if names:
        lines += [".. autosummary::", "   :nosignatures:", ""]
        # Names documented here are written relative to the module (autosummary asks so), the others in full.
        lines += [f"   {name}" if homes()[module_name, name] == module_name
                  else f"   ~{homes()[module_name, name]}.{name}" for name in names]
        lines.append("")
    elsewhere = [name for name in names if homes()[module_name, name] != module_name]
    if elsewhere:
        links = ", ".join(f":py:obj:`{homes()[module_name, name]}.{name}`" for name in elsewhere)
        lines += [f"Documented where they are public first (a package that re-exports them): {links}.", ""]
    for name in names:
        if homes()[module_name, name] != module_name:
            continue
        value = getattr(module, name)
        kind = _kind(value)
        full = f"{module_name}.{name}"
        if kind in ("class", "exception"):
            lines += [f".. auto{kind}:: {full}", "   :members:", "   :show-inheritance:", ""]
        elif kind == "function":
            lines += [f".. autofunction:: {full}", ""]
        else:
            lines += [f".. autodata:: {full}"] + ([] if _show_value(value) else ["   :no-value:"]) + [""]
    for child in submodules(module_name):
        lines += module_rst(child, depth + 1)
    return lines


class ModuleDirective(SphinxDirective):
    """``.. ltjax-module:: NAME``: the page of a public module and its submodules."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if not is_public_module(name) or name not in public_modules():
            raise self.error(f"{name} is not a public module of {ROOT_PACKAGE}")
        for module_name in public_modules():
            if module_name == name or module_name.startswith(name + "."):
                self.env.note_dependency(importlib.import_module(module_name).__file__)
        return self.parse_text_to_nodes("\n".join(module_rst(name)), allow_section_headings=True)


# --- config keys and methods -----------------------------------------------------------------------------------


def _literal(value) -> str:
    text = repr(value)
    return f"``{text}``" if text.strip() else "``''``"


def _key_constraints(key) -> str:
    parts = []
    if key.choices is not None:
        parts.append("one of " + ", ".join(_literal(choice) for choice in key.choices))
    if key.minimum is not None:
        parts.append(f">= {key.minimum:g}")
    if key.maximum is not None:
        parts.append(f"<= {key.maximum:g}")
    return "; ".join(parts)


def _escape(text: str) -> str:
    """Plain text (a key's help) safe in reStructuredText: backticks and markup characters escaped."""
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def keys_table(keys, prefix: str) -> list[str]:
    """A list-table of `name -> Key`: key, default, kind, meaning."""
    if not keys:
        return ["No keys.", ""]
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 22 18 8 52", "",
             "   * - key", "     - default", "     - kind", "     - meaning"]
    for name, key in keys.items():
        constraints = _key_constraints(key)
        meaning = _escape(key.help) + (f" ({constraints})" if constraints else "")
        lines += [f"   * - ``{prefix}{name}``", f"     - {_literal(key.default)}", f"     - {key.kind}",
                  f"     - {meaning}"]
    return lines + [""]


def _phases_text(method) -> str:
    parts = []
    for phase in method.phases:
        if phase.start is None:
            parts.append(f"**{phase.name}** from epoch 0")
        else:
            parts.append(f"**{phase.name}** from ``loss.{phase.start}`` (default {method.keys[phase.start].default:g})")
    return ", then ".join(parts)


class ConfigKeysDirective(SphinxDirective):
    """``.. ltjax-config-keys::``: every config key, from the schema and the registries."""

    def run(self) -> list[nodes.Node]:
        from ltjax import datasets, methods
        from ltjax.configs import schema

        for module in (schema, datasets, methods, importlib.import_module("ltjax.methods.registry"),
                       importlib.import_module("ltjax.keys")):
            self.env.note_dependency(module.__file__)
        lines = _title("Run keys", 1)
        lines += ["Top-level keys: ``--config.<key>=<value>``.", ""] + keys_table(schema.RUN_KEYS, "")
        for section, keys in schema.SECTION_KEYS.items():
            lines += _title(f"``{section}``", 1)
            lines += [f"``--config.{section}.<key>=<value>``.", ""] + keys_table(keys, f"{section}.")
        lines += _title("``dataset``", 1)
        lines += ["``--config.dataset.name`` picks one of the datasets below; the section then holds that "
                  "dataset's keys.", ""]
        for name, dataset in datasets.DATASETS.items():
            lines += _title(f"``dataset.name={name}``", 2)
            lines += [f"{_escape(dataset.summary)}. Default model: ``{dataset.model}``.", ""]
            lines += keys_table(dataset.keys, "dataset.")
        lines += _title("``loss``", 1)
        lines += ["``--config.loss.name`` picks one of the methods below (``ltjax-methods`` lists them); the section "
                  "then holds that method's keys. Each method's page (:doc:`methods/index`) says more.", ""]
        for name in methods.names():
            method = methods.get(name)
            lines += _title(f"``loss.name={name}``", 2)
            lines += [f"{_escape(method.summary)}. Head: ``{method.head}``. Phases: {_phases_text(method)}. "
                      f"See :doc:`methods/{name}`.", ""]
            lines += keys_table(method.keys, "loss.")
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)


def _docstring_paragraphs(doc: str) -> list[str]:
    return [" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", doc)]


def reference_notes(function) -> tuple[str | None, str | None]:
    """The `Differences from the reference code:` paragraph and the `References:` section of a docstring."""
    doc = inspect.getdoc(function) or ""
    differences = next((paragraph.split(":", 1)[1].strip() for paragraph in _docstring_paragraphs(doc)
                        if paragraph.startswith("Differences from the reference code:")), None)
    match = re.search(r"^References:\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    references = " ".join(line.strip() for line in match.group(1).splitlines()) if match else None
    return differences, references


def _code_objects(code: types.CodeType):
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _referenced_objects(function):
    """The objects a function's code loads from its globals: `name` and `module.name` (nested code included)."""
    for code in _code_objects(function.__code__):
        loaded = None
        for instruction in dis.get_instructions(code):
            if instruction.opname == "LOAD_GLOBAL":
                loaded = function.__globals__.get(instruction.argval)
                yield loaded
            elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and isinstance(loaded, types.ModuleType):
                loaded = getattr(loaded, instruction.argval, None)
                yield loaded
            else:
                loaded = None


def functions_called(function, public: dict, seen=None, *, inside: bool = False) -> list[str]:
    """The names in `public` (`id(object) -> full name`, e.g. of the losses) of the objects `function` loads,
    following the helpers of its own module (`_ldam`, lambdas); `inside`: the body of a function of `public`."""
    seen = set() if seen is None else seen
    if id(function) in public and not inside:
        return [public[id(function)]]
    function = inspect.unwrap(function)
    if not inspect.isfunction(function) or function in seen:
        return []
    seen.add(function)
    found = []
    for loaded in _referenced_objects(function):
        if inspect.isfunction(loaded) and loaded.__module__ == function.__module__ and id(loaded) not in public:
            names = functions_called(loaded, public, seen)
        else:
            names = [public[id(loaded)]] if id(loaded) in public else []
        found += [name for name in names if name not in found]
    return found


def method_library_functions(method) -> list[str]:
    """Full names of the library functions a method's phases, prediction rule and state hooks call."""
    public = {}
    for module_name in ("ltjax.losses", "ltjax.schedules", "ltjax.dynasmooth", "ltjax.stats"):
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            public.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    callables = [phase.loss for phase in method.phases]
    callables += [hook for phase in method.phases for hook in (phase.collect, phase.enter) if hook]
    callables += [hook for hook in (method.predict, method.init_state, method.init_params, method.end_epoch) if hook]
    found = []
    for function in callables:
        found += [name for name in functions_called(function, public) if name not in found]
    for name in found:  # and what those call in turn (ffds_loss -> freqfocus_gammas)
        module_name, _, attribute = name.rpartition(".")
        function = getattr(importlib.import_module(module_name), attribute)
        found += [other for other in functions_called(function, public, inside=True) if other not in found]
    return found


def _hook_lines(method) -> list[str]:
    rows = []
    for phase in method.phases:
        if phase.collect:
            rows.append(f"``{phase.name}`` updates the method's state inside the train step (``Phase.collect``)")
        if phase.enter:
            rows.append(f"``{phase.name}`` runs a host-side hook when it begins (``Phase.enter``)")
        if phase.min_epochs > 1:
            rows.append(f"``{phase.name}`` needs {phase.min_epochs} epochs: {_escape(phase.why)}")
    if method.init_state:
        rows.append("its state is created by ``Method.init_state``")
    if method.end_epoch:
        rows.append("its state is updated at each epoch's end (``Method.end_epoch``)")
    if method.init_params:
        rows.append("it trains parameters of its own with the model (``Method.init_params``)")
    if method.predict:
        rows.append("it predicts with its own rule (``Method.predict``)")
    if method.second_stage:
        stage = method.second_stage
        requires = ", ".join(f"``{key}={value}``" for key, value in stage.requires.items())
        rows.append(f"it is a second stage: it starts from the run ``loss.init_from`` names and trains only "
                    f"{', '.join(f'``{path}``' for path in stage.trains)} (fresh: "
                    f"{', '.join(f'``{path}``' for path in stage.fresh)}); it requires {requires or 'nothing else'}")
    return [f"- {row}." for row in rows] if rows else ["- none: a loss alone."]


@functools.cache
def recipes(configs_dir: str) -> dict[str, list[tuple[str, str]]]:
    """`method name -> [(file name, docstring)]` of the recipes in `experiments/configs/` (what `get_config()` of
    each file names as `loss.name`)."""
    found = defaultdict(list)
    for path in sorted(pathlib.Path(configs_dir).glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_ltjax_recipe_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found[module.get_config().loss.name].append((path.name, inspect.getdoc(module) or ""))
    return dict(found)


class MethodDirective(SphinxDirective):
    """``.. ltjax-method:: NAME``: one method of the registry."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from ltjax import methods

        method = methods.get(self.arguments[0])
        self.env.note_dependency(importlib.import_module("ltjax.methods.registry").__file__)
        functions = method_library_functions(method)
        configs_dir = pathlib.Path(self.env.srcdir).parent / "experiments" / "configs"
        lines = _title(f"``{method.name}``", 0) + [
            f"{_escape(method.summary)}.", "",
            f"- **Name**: ``--config.loss.name={method.name}``",
            f"- **Phases**: {_phases_text(method)}",
            f"- **Head**: ``{method.head}`` (:py:mod:`ltjax.models.heads`)", ""]
        lines += _title("Keys", 1) + keys_table(method.keys, "loss.")
        lines += _title("State and hooks", 1) + _hook_lines(method) + [""]
        if method.notes:
            lines += _title("Notes", 1) + [_escape(method.notes), ""]
        lines += _title("Reference recipes", 1)
        method_recipes = recipes(str(configs_dir)).get(method.name, []) if configs_dir.is_dir() else []
        for file_name, doc in method_recipes:
            self.env.note_dependency(str(configs_dir / file_name))
            lines += _title(f"``experiments/configs/{file_name}``", 2) + markdown_to_rst(doc) + [""]
        if not method_recipes:
            lines += ["No recipe in ``experiments/configs/`` trains this method; it runs on any config with "
                      f"``--config.loss.name={method.name}``.", ""]
        lines += _title("Library functions", 1)
        if functions:
            lines += ["What its phases, prediction rule and hooks call, with the references and the differences "
                      "from the reference code their docstrings state:", ""]
            for full_name in functions:
                module_name, _, name = full_name.rpartition(".")
                function = getattr(importlib.import_module(module_name), name)
                self.env.note_dependency(inspect.getsourcefile(inspect.unwrap(function)))
                differences, references = reference_notes(function)
                lines.append(f"- :py:obj:`{full_name}`")
                if references:
                    lines += ["", f"  References: {references}"]
                if differences:
                    lines += ["", f"  Differences from the reference code: {differences}"]
                lines.append("")
        else:
            lines += ["None beyond the train step's own.", ""]
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)


class MethodsTableDirective(SphinxDirective):
    """``.. ltjax-methods-table::``: every method, its head, phases and summary."""

    def run(self) -> list[nodes.Node]:
        from ltjax import methods

        self.env.note_dependency(importlib.import_module("ltjax.methods.registry").__file__)
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 12 12 30 46", "",
                 "   * - method", "     - head", "     - phases", "     - summary"]
        for name in methods.names():
            method = methods.get(name)
            lines += [f"   * - :doc:`{name}`", f"     - ``{method.head}``", f"     - {_phases_text(method)}",
                      f"     - {_escape(method.summary)}"]
        return self.parse_text_to_nodes("\n".join(lines + [""]))


# --- Markdown -------------------------------------------------------------------------------------------------


_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LIST_ITEM = re.compile(r"^\s*([-*]|\d+\.) ")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Markdown inline markup as reStructuredText: code spans, links; emphasis is the same in both."""
    out = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_plain_inline(text[position:match.start()]))
        code = match.group(2).strip()
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end()] if match.end() < len(text) else " "
        prefix = "\\ " if before.isalnum() else ""
        suffix = "\\ " if after.isalnum() or after in "(" else ""
        out.append(f"{prefix}``{code}``{suffix}")
        position = match.end()
    out.append(_plain_inline(text[position:]))
    return "".join(out)


def _plain_inline(text: str) -> str:
    """Text outside code spans: links converted, characters that reStructuredText would read as markup escaped."""
    text = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)  # `word_` is a reference in reStructuredText
    text = text.replace("|", "\\|")
    return _LINK.sub(lambda match: f"`{match.group(1)} <{match.group(2)}>`__", text)


def markdown_to_rst(text: str, *, depth: int = 0, skip_title: bool = False) -> list[str]:
    """The Markdown subset the README uses, as reStructuredText lines (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    paragraph: list[str] = []

    def flush():
        if paragraph:
            out.extend(_inline(line) for line in paragraph)
            out.append("")
            paragraph.clear()

    while index < len(lines):
        line = lines[index]
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            flush()
            level = len(heading.group(1)) - 1
            if not (skip_title and level == 0):
                title = _inline(heading.group(2).strip())
                out += _title(title, depth + max(level - (1 if skip_title else 0), 0))
            index += 1
        elif line.startswith("```"):
            flush()
            language = line[3:].strip() or "text"
            out += [f".. code-block:: {language}", ""]
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                out.append(("   " + lines[index]).rstrip())
                index += 1
            out.append("")
            index += 1
        elif line.startswith("|"):
            flush()
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                cells = [cell.strip() for cell in lines[index].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                    rows.append(cells)
                index += 1
            out += [".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                out.append(f"   * - {_inline(row[0])}".rstrip())
                out += [f"     - {_inline(cell)}".rstrip() for cell in row[1:]]
            out.append("")
        elif re.match(_LIST_ITEM, line):
            flush()
            while index < len(lines) and lines[index].strip() and (
                    re.match(_LIST_ITEM, lines[index]) or lines[index].startswith("  ")):
                out.append(_inline(lines[index]))
                index += 1
            out.append("")
        elif line.startswith("    ") and not paragraph:
            out += [".. code-block:: text", ""]
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
                out.append(("   " + lines[index][4:]).rstrip())
                index += 1
            out.append("")
        elif not line.strip():
            flush()
            index += 1
        else:
            paragraph.append(line.strip())
            index += 1
    flush()
    return out


class MarkdownDirective(SphinxDirective):
    """``.. ltjax-markdown:: PATH``: a Markdown file of the repository, relative to this document."""

    required_arguments = 1
    option_spec = {"skip-title": directives.flag}

    def run(self) -> list[nodes.Node]:
        relative, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(relative)
        text = pathlib.Path(path).read_text(encoding="utf-8")
        depth = 1 if "skip-title" in self.options else 0
        rst = markdown_to_rst(text, depth=depth, skip_title="skip-title" in self.options)
        return self.parse_text_to_nodes("\n".join(rst), allow_section_headings=True)


# --- code quoted from the repository -------------------------------------------------------------------------


def _statement(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return node
    return None


def quoted_source(text: str, name: str) -> str:
    """The source of a top-level `def`, `class` or assignment called `name` (decorators included), or with
    `name` written `NAME["key"]`, of the entry `"key": ...` of the dict literal `NAME` is assigned."""
    name, _, key = name.partition("[")
    node = _statement(ast.parse(text), name)
    if node is None:
        raise ValueError(f"no top-level definition of {name}")
    start = min([node.lineno] + [decorator.lineno for decorator in getattr(node, "decorator_list", [])])
    end = node.end_lineno
    if key:
        key = key.rstrip("]").strip("\"'")
        entries = [(k, v) for k, v in zip(node.value.keys, node.value.values)
                   if isinstance(k, ast.Constant) and k.value == key] if isinstance(node.value, ast.Dict) else []
        if not entries:
            raise ValueError(f"{name} has no entry {key!r}")
        start, end = entries[0][0].lineno, entries[0][1].end_lineno
    lines = text.splitlines()[start - 1:end]
    if key and not lines[-1].rstrip().endswith(","):
        lines[-1] += ","
    return textwrap.dedent("\n".join(lines))


class SourceDirective(SphinxDirective):
    """``.. ltjax-source:: PATH NAME``: the source of `NAME` in the file `PATH` (relative to this document) as a
    code block, read when the documentation is built; `NAME["key"]` quotes one entry of a dict literal."""

    required_arguments = 2

    def run(self) -> list[nodes.Node]:
        relative, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(relative)
        try:
            code = quoted_source(pathlib.Path(path).read_text(encoding="utf-8"), self.arguments[1])
        except (OSError, ValueError) as error:
            raise self.error(f"{self.arguments[0]}: {error}") from None
        shown = pathlib.Path(self.arguments[0]).as_posix().removeprefix("../")
        lines = [".. code-block:: python", f"   :caption: {shown}", ""]
        lines += [f"   {line}".rstrip() for line in code.splitlines()]
        return self.parse_text_to_nodes("\n".join(lines))


# --- how docstrings read ---------------------------------------------------------------------------------------

_PY_OBJECT = PyXRefRole()
_IDENTIFIER = re.compile(r"~?[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*(\(\))?")


def code_or_reference(name, rawtext, text, lineno, inliner, options=None, content=()):
    """The default role (`text` in single backticks, as the docstrings write code): a cross-reference to a Python
    object when the text is a dotted name, else inline code (`[B, C]`, `--config.loss.name=<name>`)."""
    if _IDENTIFIER.fullmatch(text):
        return _PY_OBJECT("py:obj", rawtext, text, lineno, inliner, options or {}, content)
    return [nodes.literal(rawtext, utils.unescape(text))], []


def skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are documented by its docstring's `Attributes:`, not as "Alias for field number N"."""
    if re.fullmatch(r"Alias for field number \d+", getattr(obj, "__doc__", None) or ""):
        return True
    return None


def drop_inherited_docstrings(app, what, name, obj, options, lines) -> None:
    """A constant without a doc comment shows no docstring rather than that of its type (`dict`, `tuple`)."""
    if what in ("data", "attribute") and lines:
        inherited = inspect.getdoc(type(obj)) or ""
        if "\n".join(lines).strip() == inherited.strip():
            lines.clear()


def literal_blocks_in_module_docstrings(app, what, name, obj, options, lines) -> None:
    """A module docstring's Markdown-style code block (a blank line, then lines indented by 4 under an unindented
    paragraph) becomes a literal block, as reStructuredText writes it (`::`), instead of a quoted paragraph."""
    if what != "module":
        return
    index = 1
    while index < len(lines):
        previous = next((line for line in reversed(lines[:index - 1]) if line.strip()), "")
        if (not lines[index - 1].strip() and lines[index].startswith("    ") and previous
                and not previous.startswith(" ") and not previous.rstrip().endswith("::")
                and not lines[index].lstrip().startswith(">>>")):
            lines[index:index] = ["::", ""]
            index += 2
            while index < len(lines) and (lines[index].startswith(" ") or not lines[index].strip()):
                index += 1
        index += 1


def write_method_pages(app) -> None:
    """Writes `methods/<name>.rst` (one directive line, git-ignored) for every method of the registry, so a new method
    gets its page without a file of its own; a page whose method is gone is removed."""
    from ltjax import methods

    folder = pathlib.Path(app.srcdir) / "methods"
    wanted = {f"{name}.rst": f".. ltjax-method:: {name}\n" for name in methods.names()}
    for path in folder.glob("*.rst"):
        if path.name != "index.rst" and path.name not in wanted:
            path.unlink()
    for file_name, text in wanted.items():
        path = folder / file_name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", write_method_pages)
    app.add_role("ltjax-code", code_or_reference)
    app.connect("autodoc-skip-member", skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", drop_inherited_docstrings)
    app.connect("autodoc-process-docstring", literal_blocks_in_module_docstrings)
    app.add_directive("ltjax-module", ModuleDirective)
    app.add_directive("ltjax-config-keys", ConfigKeysDirective)
    app.add_directive("ltjax-method", MethodDirective)
    app.add_directive("ltjax-methods-table", MethodsTableDirective)
    app.add_directive("ltjax-markdown", MarkdownDirective)
    app.add_directive("ltjax-source", SourceDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

