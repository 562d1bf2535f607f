"""From an ONNX node back to the PyTorch code that made it: module, class, file and line.

Exporters leave the way back in the model (../shared/docs/domain.md, section 9); this module
reads it, and only it: node metadata strings, node names and initializer *names*, never weights.

- torch.onnx's dynamo exporter writes node ``metadata_props``:
  ``pkg.torch.onnx.name_scopes`` (``['', 'm', 'm.lm_head', 'linear']``: the module path chain,
  then the op), ``pkg.torch.onnx.class_hierarchy`` (the classes of those scopes, then the op's
  target, ``aten.linear.default``), ``pkg.torch.onnx.stack_trace`` (``File "...", line N, in fn``
  frames, outermost first) and ``namespace`` (``scope: class`` pairs joined by ``/``; read only
  when the two lists are missing).
- The legacy TorchScript exporter names nodes by module path: ``/m/cls/predictions/decoder/MatMul``.
  Each segment is the module's *unqualified* name (torch.onnx.utils: the last non-numeric atom
  of its qualified name and the numeric atoms after it), so ``/features/features.0/features.0.0``
  is ``features.0.0`` and ``/m/model/layers.0/mlp`` is ``m.model.layers.0.mlp``.
- Parameter names survive as initializer names (``m.lm_head.weight``): the module that owns a
  weight, followed back through Transpose/Cast/... with :func:`tclint.view.weight_root`.

Which module a node belongs to, in this order:

1. A node that onnxscript's rewriter fused (``pkg.onnxscript.rewriter.rule_name`` names a
   ``Fuse...`` rule, e.g. FuseBatchNormIntoConv) carries the metadata of the op it absorbed
   (the BatchNorm): when its weight names another module, the weight's owner is the module
   (``conv1``), the class, file and line are unknown, and ``classes`` keeps only the ancestors.
2. Otherwise the innermost module of ``name_scopes`` (the call site; for a tied LM head this is
   ``m.lm_head`` even when the weight is named after the embedding: see ``weight``).
3. Otherwise the module path in a legacy node name.
4. Otherwise the owner of the node's weight, when its initializer keeps a parameter name.

``file``/``line`` is the innermost frame of the stack trace in model code: frames in the
framework (torch, onnxscript, the Python standard library, transformers' generic layers and
plumbing: :data:`FRAMEWORK_PATHS`) are skipped, so ``nn.Linear``'s ``F.linear`` line gives way
to ``logits = self.lm_head(hidden_states)`` in modeling_gpt2.py. ``frames`` keeps every frame
for :func:`frame_under` (``--source-root``).
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx_ir as ir

from tclint.view import ModelView, iter_nodes, weight_root

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
STACK_TRACE = "pkg.torch.onnx.stack_trace"
NAMESPACE = "namespace"
REWRITE_RULE = "pkg.onnxscript.rewriter.rule_name"

#: Path fragments of framework code: a frame whose file path contains one of these (as whole
#: path components; a trailing "/" means "anything under this folder") is not the model's code.
FRAMEWORK_PATHS: tuple[str, ...] = (
    "torch/", "onnxscript/", "functorch/",
    "transformers/pytorch_utils.py", "transformers/activations.py",
    "transformers/modeling_utils.py", "transformers/modeling_layers.py",
    "transformers/masking_utils.py", "transformers/utils/", "transformers/integrations/",
)


@dataclass(frozen=True)
class Frame:
    """One stack frame as the exporter recorded it (path as on the exporting machine)."""

    file: str
    line: int
    function: str
    code: str | None  # the source line the exporter recorded, stripped (None if absent)


@dataclass(frozen=True)
class Source:
    """Where a node comes from in the PyTorch model; None (or empty) where the model does not say.

    ``module``: the module path as PyTorch names it (``m.lm_head``); ``cls``: its class
    (``torch.nn.modules.linear.Linear``); ``file``/``line``: the call in model code;
    ``frames``: the whole stack trace, outermost first; ``classes``: the module classes from the
    root to ``module`` (for framework advice: ``transformers.models.gpt2...GPT2LMHeadModel``);
    ``weight``: the parameter name of the node's weight (``m.lm_head.weight``), if it kept one.
    """

    module: str | None = None
    cls: str | None = None
    file: str | None = None
    line: int | None = None
    frames: tuple[Frame, ...] = ()
    classes: tuple[str, ...] = ()
    weight: str | None = None

    @property
    def weight_owner(self) -> str | None:
        """The module that owns ``weight`` (for a tied LM head: where the weight is defined)."""
        return _owner(self.weight) if self.weight else None

    @property
    def empty(self) -> bool:
        return self == NO_SOURCE

    def to_dict(self) -> dict:
        """The JSON form a finding will carry: ``{module, class, file, line, weight}``."""
        return {"module": self.module, "class": self.cls, "file": self.file, "line": self.line,
                "weight": self.weight}


NO_SOURCE = Source()


# --------------------------------------------------------------------------------------------
# Parsing what the exporters write
# --------------------------------------------------------------------------------------------
_STR = re.compile(r"""'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)\"""")


@functools.lru_cache(maxsize=4096)
def _str_list(text: str | None) -> tuple[str, ...] | None:
    """A Python ``repr`` of a list of strings, as the dynamo exporter writes them (no eval of
    anything else: a regex over the quoted items, unescaped only when they hold a backslash).
    Cached: a model's class hierarchies repeat from layer to layer."""
    if not text or not text.startswith("["):
        return None
    if text == "[]":
        return ()
    if "\\" not in text and '"' not in text and text.startswith("['") and text.endswith("']"):
        return tuple(text[2:-2].split("', '"))  # the common case: plain names
    out = []
    for m in _STR.finditer(text):
        raw = m.group(0)
        if "\\" in raw:
            try:
                out.append(ast.literal_eval(raw))
            except (ValueError, SyntaxError):
                return None
        else:
            out.append(raw[1:-1])
    return tuple(out)


_FRAME = re.compile(r'File "([^"\n]+)", line (\d+), in ([^\n]*)(?:\n(?![ \t]*File ")[ \t]*([^\n]*))?')


@functools.lru_cache(maxsize=4096)
def parse_stack_trace(text: str | None) -> tuple[Frame, ...]:
    """``File "...", line N, in fn`` frames (outermost first), with the recorded code line.
    Cached: every layer of a model repeats the same trace."""
    if not text:
        return ()
    return tuple(Frame(file=m.group(1), line=int(m.group(2)), function=m.group(3).strip(),
                       code=(m.group(4) or "").strip() or None)
                 for m in _FRAME.finditer(text))


_OP_TARGET = ("aten.", "prims.", "<", "torch.ops.", "_operator.")


@functools.lru_cache(maxsize=4096)
def _module_classes(classes: tuple[str, ...]) -> int:
    """How many leading class_hierarchy entries are module classes: the rest are the op's
    target (``aten.addmm.default``). Cached: hierarchies repeat from layer to layer."""
    for i, cls in enumerate(classes):
        if cls.startswith(_OP_TARGET):
            return i
    return len(classes)


def _module_chain(scopes, classes) -> tuple[list[str], list[str]]:
    """The module scopes (root first) and their classes, without the op scope at the end.

    A module scope is the root ``''`` or extends the one before it (``m`` -> ``m.lm_head``);
    the first scope that does not, or whose class is an op target, ends the chain.
    """
    if not scopes or scopes[0] != "":
        return [], []
    if classes is not None and len(classes) != len(scopes):
        classes = None
    limit = _module_classes(tuple(classes)) if classes is not None else len(scopes)
    mods = [scopes[0]]
    for s in scopes[1:limit]:
        prev = mods[-1]
        if prev and not s.startswith(prev + "."):
            break
        mods.append(s)
    if classes is None and len(mods) > 1 and len(mods) == len(scopes):
        mods.pop()  # the exporter always ends the list with the op's own scope
    return mods, list(classes[:len(mods)]) if classes is not None else []


def _from_namespace(text: str | None) -> tuple[list[str], list[str]] | None:
    """``': __main__.HF/m: ...GPT2LMHeadModel/m.lm_head: torch...Linear/linear: aten.linear.default'``."""
    if not text or ": " not in text:
        return None
    scopes, classes = [], []
    for part in text.split("/"):
        name, sep, cls = part.partition(": ")
        if not sep:
            return None
        scopes.append(name)
        classes.append(cls)
    return scopes, classes


def _unqualified(name: str) -> str:
    """torch.onnx.utils._unqualified_variable_name: last non-numeric atom and what follows."""
    atoms = name.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return name


_SEGMENT = re.compile(r"^[^\s/:]+$")


def legacy_module(node_name: str) -> str | None:
    """The module path in a legacy TorchScript-exporter node name, or None if it is not one.

    ``/m/cls/predictions/decoder/MatMul`` -> ``m.cls.predictions.decoder``;
    ``/features/features.0/features.0.0/Conv`` -> ``features.0.0`` (segments are unqualified
    names: a segment that extends its parent's unqualified name by numeric atoms is that
    parent's numbered child).
    """
    if not node_name.startswith("/"):
        return None
    segments = node_name[1:].split("/")[:-1]  # the last one is the op
    if not segments or not all(_SEGMENT.match(s) for s in segments):
        return None
    path = ""
    for seg in segments:
        if path:
            parent = _unqualified(path)
            rest = seg[len(parent) + 1:] if seg.startswith(parent + ".") else ""
            if rest and all(a.isnumeric() for a in rest.split(".")):
                path = f"{path}.{rest}"
            else:
                path = f"{path}.{seg}"
        else:
            path = seg
    return path


_PARAM = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)+$")


def _owner(param: str) -> str:
    return param.rsplit(".", 1)[0]


def _parameter_name(root: ir.Value) -> str | None:
    return root.name if root.name and _PARAM.match(root.name) else None


def _node_weight(node: ir.Node) -> str | None:
    """The parameter name of the node's weight (MatMul/Gemm B, Conv W: inputs[1], else
    inputs[0]), or of its bias when the weight lost its name (a folded Conv+BN keeps
    ``conv1.weight_bias``). One walk per operand; activations end theirs at once."""
    inputs = list(node.inputs)
    for v in inputs[1:2] + inputs[:1]:
        root = weight_root(v)
        if root is None:
            continue
        name = _parameter_name(root)
        if name:
            return name
        for b in inputs[2:]:
            broot = weight_root(b)
            name = _parameter_name(broot) if broot is not None else None
            if name:
                return name
        return None
    return None


# --------------------------------------------------------------------------------------------
# Frames: which ones are the model's code
# --------------------------------------------------------------------------------------------
def _parts(file: str) -> tuple[str, ...]:
    path = PureWindowsPath(file) if re.match(r"^[A-Za-z]:[\\/]", file) or "\\" in file else PurePosixPath(file)
    return tuple(p for p in path.parts if p not in ("/", "\\") and not re.match(r"^[A-Za-z]:\\?$", p))


def _contains(parts: tuple[str, ...], fragment: str) -> bool:
    """``torch/`` matches a file anywhere under a ``torch`` folder; ``a/b.py`` a path ending so."""
    want = tuple(fragment.strip("/").split("/"))
    if not fragment.endswith("/"):
        return parts[-len(want):] == want
    n = len(want)
    return any(parts[i:i + n] == want for i in range(len(parts) - n))


@functools.lru_cache(maxsize=4096)
def is_framework_file(file: str) -> bool:
    """Torch, onnxscript, the standard library, transformers' generic layers: not model code."""
    if file.startswith("<"):
        return True  # <frozen ...>, <string>, <eval_with_key>
    parts = _parts(file)
    for i, p in enumerate(parts[:-1]):
        if re.fullmatch(r"python\d+(\.\d+)*", p) and parts[i + 1] not in ("site-packages", "dist-packages"):
            return True  # .../lib/python3.11/functools.py
    return any(_contains(parts, f) for f in FRAMEWORK_PATHS)


def model_frame(frames: tuple[Frame, ...]) -> Frame | None:
    """The innermost frame in model code (None if every frame is the framework's)."""
    for f in reversed(frames):
        if not is_framework_file(f.file):
            return f
    return None


# --------------------------------------------------------------------------------------------
# Node -> Source
# --------------------------------------------------------------------------------------------
def source_of(node: ir.Node) -> Source:
    """Where ``node`` comes from, from what the exporter left in the model (see the module doc)."""
    meta = node.metadata_props
    scopes = _str_list(meta.get(NAME_SCOPES))
    classes = _str_list(meta.get(CLASS_HIERARCHY)) if scopes is not None else None
    if scopes is None:
        ns = _from_namespace(meta.get(NAMESPACE))
        if ns is not None:
            scopes, classes = ns
    mods, kinds = _module_chain(scopes, classes) if scopes else ([], [])
    frames = parse_stack_trace(meta.get(STACK_TRACE))
    weight = _node_weight(node)

    if len(kinds) != len(mods):
        kinds = []
    module = mods[-1] if mods else None
    cls = kinds[-1] if kinds else None
    owner = _owner(weight) if weight else None
    if module is not None and owner and owner != module and "Fuse" in meta.get(REWRITE_RULE, ""):
        # rule 1: the fused node carries the absorbed op's metadata; keep the shared ancestors
        keep = [i for i, s in enumerate(mods) if s == "" or owner == s or owner.startswith(s + ".")]
        kinds = [kinds[i] for i in keep] if kinds else []
        cls = kinds[-1] if kinds and mods[keep[-1]] == owner else None
        return Source(module=owner, cls=cls, classes=tuple(kinds), weight=weight)
    if module is None and node.name:
        module = legacy_module(node.name)
    if module is None:
        module = owner
    if module == "":
        module = None  # the root module: says nothing a finding can use
    frame = model_frame(frames)
    return Source(module=module, cls=cls, file=frame.file if frame else None,
                  line=frame.line if frame else None, frames=frames, classes=tuple(kinds),
                  weight=weight)


class SourceMap:
    """Sources of a model's findings, computed on demand and cached per node.

    ``SourceMap(model, view).for_path(finding.path)``: a finding's ``path`` is its layer's label
    (``node[part]`` for multi-GEMM ops, ``loop/body/node`` inside subgraphs) or, for hazard
    findings, a node name. Nothing is read until asked: linting cost is one dict of layer labels
    plus, per finding, a few regexes over that node's metadata strings.
    """

    def __init__(self, model: ir.Model, view: ModelView | None = None) -> None:
        self.model = model
        self.view = view
        self._cache: dict[int, Source] = {}
        self._by_label: dict[str, ir.Node] | None = None
        self._by_name: dict[str, ir.Node] | None = None

    def node(self, node: ir.Node | None) -> Source:
        if node is None:
            return NO_SOURCE
        key = id(node)
        if key not in self._cache:
            self._cache[key] = source_of(node)
        return self._cache[key]

    def for_path(self, path: str) -> Source:
        """The source of a finding's ``path``."""
        return self.node(self.node_at(path))

    def node_at(self, path: str) -> ir.Node | None:
        """The node a finding's ``path`` names: a layer label, a memory op's path, a node name."""
        if not path:
            return None
        if self._by_label is None:
            self._by_label = {}
            if self.view is not None:
                for layer in self.view.layers:
                    if layer.node is not None:
                        self._by_label.setdefault(layer.label, layer.node)
                        self._by_label.setdefault(layer.path, layer.node)
                for op in self.view.memory_ops:
                    if op.node is not None:
                        self._by_label.setdefault(op.path, op.node)
        node = self._by_label.get(path)
        if node is None:
            if self._by_name is None:
                self._by_name = {}
                for p, n in iter_nodes(self.model.graph):
                    self._by_name.setdefault(p, n)
                    if n.name:
                        self._by_name.setdefault(n.name, n)
            node = self._by_name.get(path)
        return node


# --------------------------------------------------------------------------------------------
# --source-root: the frame in the user's checkout
# --------------------------------------------------------------------------------------------
def frame_under(source: Source, root: str | Path) -> tuple[str, int] | None:
    """The innermost stack frame whose file is in the checkout at ``root``, as (path relative to
    ``root`` in POSIX form, line), or None.

    The trace records paths of the machine that exported the model, so a frame matches when
    (a) its path, resolved, is under ``root`` and the file exists, or (b) the longest suffix of
    its path components that names a file under ``root`` does (exported from
    ``/home/alice/repo/train/model.py``, checked out at ``/ci/work``: ``train/model.py``); and
    in both cases the file's line ``N`` is the code the exporter recorded for that frame (when it
    recorded one), so a stale checkout or a same-named file elsewhere never gets the annotation.
    Framework frames (:func:`is_framework_file`) are skipped even under ``root``: a root that
    holds an installed torch still gets the model's line, not ``F.linear``'s.
    """
    base = Path(root).resolve()
    for f in reversed(source.frames):
        if is_framework_file(f.file):
            continue
        rel = _locate(f.file, str(base))
        if rel is not None and _line_matches(base / rel, f.line, f.code):
            return rel, f.line
    return None


@functools.lru_cache(maxsize=4096)
def _locate(file: str, base: str) -> str | None:
    root = Path(base)
    parts = _parts(file)
    if not parts or any(p in (".", "..") for p in parts):
        return None  # a recorded path never climbs out of the checkout
    candidate = Path(file)
    if candidate.is_absolute():
        try:
            rel = candidate.resolve().relative_to(root)
            if (root / rel).is_file():
                return rel.as_posix()
        except (ValueError, OSError):
            pass
    for i in range(len(parts)):  # longest suffix first
        suffix = PurePosixPath(*parts[i:])
        try:
            if (root / suffix).is_file():
                return suffix.as_posix()
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=1024)
def _lines(path: Path) -> tuple[str, ...]:
    try:
        return tuple(path.read_text(errors="replace").splitlines())
    except OSError:
        return ()


def _line_matches(path: Path, line: int, code: str | None) -> bool:
    lines = _lines(path)
    if not 1 <= line <= len(lines):
        return False
    return code is None or lines[line - 1].strip() == code
