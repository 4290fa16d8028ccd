"""A griffe extension for the API page: sensorium's plain-text docstrings as readable Markdown.

The library's docstrings are written for `help()` (STYLE.md: shapes, conventions, a reference, a
doctest), not in Google or NumPy style, so mkdocstrings renders them as Markdown as they are. Two
things need help there:

- a doctest (`>>> ...` and its output) would render as nested block quotes: it becomes a fenced
  `pycon` block;
- the lines that describe parameters (`features: (B, V, D) L2-normalised ...`, with indented
  continuation lines) would run together into one paragraph: a line that starts with names of the
  function's own parameters followed by a colon becomes a list item, its indented lines its
  continuation. Names are checked against the signature, so prose such as "Safe for small sets:"
  is left alone.

The text itself is never changed. Named in mkdocs.yml (`mkdocstrings` -> `extensions`).
"""

from __future__ import annotations

import re

import griffe

_NAMES = re.compile(r"^([A-Za-z_]\w*(?:\s*[,/]\s*[A-Za-z_]\w*)*):\s+(.*)$")


def _fence_doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith(">>>"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += ["```pycon", *block, "```", ""]
            continue
        out.append(lines[i])
        i += 1
    return out


def _parameter_lists(lines: list[str], parameters: set[str]) -> list[str]:
    out: list[str] = []
    in_list = False
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _NAMES.match(line)
        names = re.split(r"\s*[,/]\s*", match.group(1)) if match else []
        if match and names and all(n in parameters for n in names):
            if not in_list and out and out[-1].strip():
                out.append("")
            sep = " / " if "/" in match.group(1) else ", "
            out.append(f"- {sep.join(f'`{n}`' for n in names)}: {match.group(2)}")
            in_list = True
        elif in_list and line.strip() and line[:1].isspace():
            out[-1] += " " + line.strip()  # a continuation line of the item
        else:
            if in_list and line.strip():
                out.append("")  # prose after the list starts a paragraph of its own
            in_list = False
            out.append(line)
    return out


class PlainDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None:
            return
        lines = _fence_doctests(obj.docstring.value.splitlines())
        parameters = {p.name for p in getattr(obj, "parameters", [])} - {"self", "cls"}
        if parameters:
            lines = _parameter_lists(lines, parameters)
        obj.docstring.value = "\n".join(lines).rstrip()
