"""Safe YAML reading that remembers where every key came from.

Only the YAML core types are accepted (mappings, sequences, strings, numbers, booleans,
null). Tags that would construct objects (``!!python/object`` and friends) are refused,
duplicate keys are refused, and a document that expands (through aliases) into more than
:data:`MAX_NODES` nodes or nests deeper than :data:`MAX_DEPTH` is refused, so a "billion
laughs" file fails at once in bounded memory.

A file is read and parsed once (:func:`read_yaml` -> :class:`YamlDocument`: its text, data
and line index), and the document is handed on: a survey (:func:`fishcast.survey.
survey_from_document`), a grid (:func:`fishcast.pipeline.batch.grid_from_document`), the
base survey of every design of a grid. PyYAML composes with libyaml's parser when it has it
(``yaml.CSafeLoader``: the same nodes with the same line marks, composed in C, ~15x faster
than the pure-Python reader; 2.4 -> 0.6 ms for the Euclid WL recipe's load_yaml), else with
its pure-Python one.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import yaml

from .errors import SurveyError

#: a survey holds a few hundred nodes, a grid a few thousand; PyYAML composes ~10,000 nodes a second
MAX_NODES = 50_000
MAX_DEPTH = 64

_ALLOWED_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}

Path = tuple[Hashable, ...]


def read_yaml_file(path, what: str = "survey file") -> str:
    """The text of a YAML file, read by :mod:`fishcast.io.reading` (a regular file of at most
    :data:`~fishcast.io.reading.MAX_YAML_BYTES`, refused from its size before it is read or
    composed; UTF-8 without control characters); problems are a located SurveyError."""
    from .errors import FileFormatError
    from .io import reading
    from .io.reading import TextError

    try:
        return reading.decode_text(reading.read_bytes(path, what, reading.MAX_YAML_BYTES), str(path), what)
    except TextError as exc:
        raise SurveyError(str(path), [(exc.line, "", exc.detail)]) from None
    except FileFormatError as exc:
        msg = str(exc)
        prefix = f"{path}: "
        raise SurveyError(str(path), [(None, "", msg[len(prefix):] if msg.startswith(prefix) else msg)]) from None


class _CountingLoader(yaml.SafeLoader):
    """A SafeLoader that stops composing after :data:`MAX_NODES` nodes: a large flat
    document is refused in bounded memory, not after composing gigabytes of nodes (aliases
    are not composed again; their expansion is counted by :func:`_expanded_size`)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.composed = 0

    def compose_node(self, parent, index):
        self.composed += 1
        if self.composed > MAX_NODES:
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem=f"more than {MAX_NODES} nodes; refused", problem_mark=mark)
        return super().compose_node(parent, index)


def _count_nodes_fast(text: str) -> tuple[int, Path] | None:
    """(line, key path) where the document passes :data:`MAX_NODES` nodes, counted on
    libyaml's events (C, ~1 us per node) before anything is composed (by libyaml, which does
    not count: :func:`_compose`), or None. Without libyaml, or on a syntax error (reported,
    located, by the composer), None."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    n = 0
    # frames: [kind, key or index, expecting a key]; the path is the frames' keys/indices
    frames: list[list] = []

    def done_value() -> None:
        if frames:
            top = frames[-1]
            if top[0] == "map":
                top[2] = True
            else:
                top[1] += 1

    try:
        for ev in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                n += 1
                if n > MAX_NODES:
                    path = tuple(f[1] for f in frames if f[1] is not None)
                    return ev.start_mark.line + 1, path
                top = frames[-1] if frames else None
                is_key = top is not None and top[0] == "map" and top[2]
                if is_key and isinstance(ev, yaml.ScalarEvent):
                    top[1], top[2] = ev.value, False
                    continue
                if isinstance(ev, yaml.SequenceStartEvent):
                    frames.append(["seq", 0, False])
                elif isinstance(ev, yaml.MappingStartEvent):
                    frames.append(["map", None, True])
                else:
                    done_value()
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                if frames:
                    frames.pop()
                done_value()
    except yaml.YAMLError:
        return None
    return None


def _compose(text: str):
    """(loader, root node or None) of ``text``, composed by libyaml (``yaml.CSafeLoader``)
    when PyYAML has it -- :func:`_count_nodes_fast` has then kept the node limit; libyaml
    nests at most 1000 levels and :func:`_convert` refuses more than :data:`MAX_DEPTH` --
    else by the pure-Python :class:`_CountingLoader`. Both resolve tags with PyYAML's safe
    resolver and mark every node with its line (``start_mark.line``). A document libyaml
    refuses is composed again by the pure-Python reader, whose verdict and messages stay
    the reference (they name the character or alias at fault; a nesting past libyaml's
    limit is then refused at Python's recursion limit, as without libyaml): an invalid file
    costs the slow reader, a valid one never. The caller disposes of the loader."""
    if getattr(yaml, "__with_libyaml__", False):
        loader = yaml.CSafeLoader(text)
        try:
            return loader, loader.get_single_node()
        except yaml.YAMLError:
            loader.dispose()
    loader = _CountingLoader(text)
    try:
        return loader, loader.get_single_node()
    except BaseException:
        loader.dispose()
        raise


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file read and parsed once: its ``text``, its name (``filename``, as messages
    give it), its ``data`` (plain dicts, lists and scalars: readers copy before they change
    it) and ``lines``, the 1-based line of every key path (:func:`load_yaml`)."""

    text: str
    filename: str
    data: object
    lines: dict

    @classmethod
    def parse(cls, text: str, filename: str) -> "YamlDocument":
        """The document of ``text``: :func:`load_yaml`'s errors (file, line, key)."""
        data, lines = load_yaml(text, filename)
        return cls(text, filename, data, lines)


def read_yaml(path, what: str = "survey file") -> YamlDocument:
    """Read (:func:`read_yaml_file`) and parse (:func:`load_yaml`) a YAML file, once; ``what``
    names it in the messages of a file that cannot be read."""
    return YamlDocument.parse(read_yaml_file(path, what), str(path))


def load_yaml(text: str, filename: str) -> tuple[object, dict[Path, int]]:
    """Parse ``text``; return the data and a map from key path to 1-based line number.

    Raises :class:`~fishcast.errors.SurveyError` naming the file and line on any problem
    (also for a control character: PyYAML's own message gives no line).
    """
    from .io.reading import describe_char, first_control

    bad = first_control(text)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        col = bad - (text.rfind("\n", 0, bad) + 1) + 1
        raise SurveyError(filename, [(line, "", f"the control character {describe_char(text[bad])} at column {col} "
                                                "is not allowed in YAML; refused")])
    too_many = _count_nodes_fast(text)
    if too_many is not None:
        line, where = too_many
        raise SurveyError(filename, [(line, _dotted(where[:8]),
                                      f"the document has more than {MAX_NODES} nodes here; refused")])
    loader = None
    try:
        try:
            loader, node = _compose(text)
        except RecursionError:  # PyYAML composes recursively: thousands of nested brackets
            raise SurveyError(filename, [(None, "", f"nesting deeper than {MAX_DEPTH}; refused")]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            msg = exc.problem or str(exc)
            raise SurveyError(filename, [(line, "", f"not valid YAML: {msg}")]) from None
        except yaml.YAMLError as exc:
            raise SurveyError(filename, [(None, "", f"not valid YAML: {exc}")]) from None
        if node is None:
            raise SurveyError(filename, [(None, "", "the file is empty: a survey needs at least name, cosmology, parameters and probes")])
        memo: dict = {}
        if _expanded_size(node, memo, 0) > MAX_NODES:  # counted on the alias graph: a bomb is refused at once
            line, where = _heaviest(node, memo)
            raise SurveyError(filename, [(line, _dotted(where),
                                          f"the document expands to more than {MAX_NODES} nodes (alias bomb?); refused")])
        lines: dict[Path, int] = {}
        counter = [0]
        data = _convert(loader, node, (), lines, counter, 0, filename)
        return data, lines
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(node, memo: dict, depth: int) -> int:
    """Number of nodes ``node`` expands to, aliases counted as often as they are used;
    computed once per distinct node (so in time linear in the file, not in the expansion).
    Beyond :data:`MAX_DEPTH` (also: a recursive alias) the count stops: :func:`_convert`
    refuses such nesting."""
    key = id(node)
    if key in memo:
        return memo[key]
    if depth > MAX_DEPTH:
        return 1
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(v, memo, depth + 1) for _, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, depth + 1) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _heaviest(node, memo: dict) -> tuple[int, Path]:
    """(line, key path) of the key under which most of an oversized expansion lies: from the
    top, follow the child that expands most while it holds at least half the limit (at most
    8 levels), so that the message names the key that holds the bomb."""
    path: list = []
    while len(path) < 8:
        if isinstance(node, yaml.MappingNode):
            children = [(k.value, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = list(enumerate(node.value))
        else:
            break
        if not children:
            break
        key, child = max(children, key=lambda kv: memo.get(id(kv[1]), 1))
        if memo.get(id(child), 1) * 2 < MAX_NODES:
            break
        path.append(key)
        node = child
    return node.start_mark.line + 1, tuple(path)


def _convert(loader, node, path: Path, lines, counter, depth, filename):
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise SurveyError(filename, [(node.start_mark.line + 1, _dotted(path),
                                      f"the document expands to more than {MAX_NODES} nodes (alias bomb?); refused")])
    if depth > MAX_DEPTH:
        raise SurveyError(filename, [(node.start_mark.line + 1, _dotted(path[:8]),
                                      f"nesting deeper than {MAX_DEPTH} levels below this key; refused")])
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in _ALLOWED_TAGS:
        raise SurveyError(filename, [(node.start_mark.line + 1, _dotted(path),
                                      f"the tag {node.tag!r} is not allowed: only plain YAML data is accepted")])
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _ALLOWED_TAGS:
                raise SurveyError(filename, [(key_node.start_mark.line + 1, _dotted(path), "keys must be plain strings")])
            if key_node.tag == "tag:yaml.org,2002:merge" or key_node.value == "<<":
                raise SurveyError(filename, [(key_node.start_mark.line + 1, _dotted(path), "merge keys (<<) are not supported")])
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise SurveyError(filename, [(key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")])
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(loader, value_node, path + (key,), lines, counter, depth + 1, filename)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, path + (i,), lines, counter, depth + 1, filename) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node)
    except yaml.YAMLError as exc:
        raise SurveyError(filename, [(node.start_mark.line + 1, _dotted(path), f"cannot read value: {exc}")]) from None


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """Line of the longest prefix of ``path`` that is in the map."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), None)


dotted = _dotted


def where_in(text: str, filename: str, *paths: Path) -> str:
    """``file:line: key`` of the first of the key ``paths`` that the YAML ``text`` holds,
    else of the last one at the line of its nearest key: how a problem found after a file
    was loaded is located, as the loader locates its own."""
    try:
        _, lines = load_yaml(text, filename)
    except SurveyError:  # pragma: no cover - the text was parsed once already
        return f"{filename}: {_dotted(paths[-1])}"
    path = next((p for p in paths if tuple(p) in lines), paths[-1])
    line = line_of(lines, path)
    return f"{filename}{f':{line}' if line is not None else ''}: {_dotted(path)}"
