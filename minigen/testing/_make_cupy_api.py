"""Regenerate ``minigen/testing/cupy_api.json``: what CuPy's API offers, read from its wheel.

    pip download cupy-cuda13x --no-deps -d /tmp/cupywheel
    python minigen/testing/_make_cupy_api.py /tmp/cupywheel/cupy_cuda13x-*.whl

The stand-in GPU device (``minigen/testing/standin.py``) lets tests call only what this
file lists: the names in ``cupy``, ``cupy.linalg``, ``cupy.fft`` and ``cupy.random``, the
methods and attributes of ``cupy.ndarray``, the methods of a ufunc (``add.at``,
``maximum.reduce``) and of ``cupy.random.Generator``, each with the keyword arguments it
takes. The wheel is read statically: no GPU, no CUDA and no CuPy import is needed.

How each kind of name is recovered:

* **Python modules** (most of CuPy's functions): parsed with ``ast``. A function's
  keywords are its parameters (positional-only ones excluded). When it takes
  ``**kwargs`` and only ever pops named keys from it (``kwargs.pop("dtype", None)``, then
  raises on the rest, as ``einsum`` does) those keys are its keywords; when it checks
  them against an ``allowed_kwargs`` table (``pad``) the table's keys are; when it hands
  ``kwargs`` on elsewhere, any keyword is allowed (``null``).
* **Names imported from NumPy** (dtypes, ``inf``, ``newaxis``, ``finfo``...): CuPy
  re-exports NumPy's own object, so NumPy's keywords apply (``null``).
* **Compiled (Cython) modules**: CuPy is built with Cython's ``embedsignature``, so every
  ``def``/``cpdef`` function and method keeps its signature in the binary as a docstring
  line ``name(args)`` or ``Class.name(self, args)``; those lines are read from the
  ``.so`` file's strings. Properties show up as ``__pyx_getprop_…_<Class>_<name>``
  symbols and special methods as ``__pyx_pw_…_<Class>_<N><__name__>`` symbols.
* **Ufuncs made in compiled code** (``cupy.add``, ``cupy.sqrt``: module-level objects,
  no signature): a public name bound in a compiled module without a signature line is
  taken to be a ufunc when that module calls ``create_ufunc``/``create_comparison``
  (checked in its string table, which Cython 3 stores zlib-compressed: it is inflated).
* **ufunc.__call__** takes ``**kwargs``: its docstring names ``out`` and ``dtype``;
  ``casting`` and ``where`` are the other keys it pops (its C locals
  ``__pyx_v_casting`` and ``__pyx_v_where`` are in ``_kernel``'s symbols, and are
  required to be there).

The result is written next to this script. Entries: ``{"kind": ..., "keywords": [...]}``
with ``keywords`` null when any keyword is accepted.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("cupy_api.json")
NAMESPACES = ("cupy", "cupy.linalg", "cupy.fft", "cupy.random")
UFUNC_FACTORIES = {
    "create_ufunc",
    "create_math_ufunc",
    "create_rounding_ufunc",
    "_create_float_test_ufunc",
    "create_comparison",
    "create_arithmetic",
}
UFUNC_CALL_EXTRA = ("casting", "where")  # see the module docstring
OPEN = None  # any keyword accepted


class Wheel:
    """The files of the wheel, by path, with parsed Python modules and compiled strings cached."""

    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())
        self.version = re.search(r"-(\d+\.\d+\.\d+[^-]*)-", path.name).group(1)
        self._trees: dict[str, ast.Module] = {}
        self._binaries: dict[str, tuple[list[str], bytes]] = {}

    def source_of(self, module: str) -> tuple[str, str] | None:
        """("py", path) or ("so", path) of a module, or None when it is not in the wheel."""
        base = module.replace(".", "/")
        for path in (base + ".py", base + "/__init__.py"):
            if path in self.names:
                return "py", path
        for path in self.names:
            if path.startswith(base + ".") and path.endswith(".so") and "/" not in path[len(base) :]:
                return "so", path
        return None

    def tree(self, path: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(self.zip.read(path))
        return self._trees[path]

    def strings(self, path: str) -> tuple[list[str], bytes]:
        """The printable strings of a compiled module, and its inflated string tables."""
        if path not in self._binaries:
            data = self.zip.read(path)
            text = [s.decode() for s in re.findall(rb"[\x20-\x7e]{3,}", data)]
            tables = b""
            for header in (b"\x78\x9c", b"\x78\xda"):
                at = data.find(header)
                while at >= 0:
                    inflater = zlib.decompressobj()
                    try:
                        out = inflater.decompress(data[at:])
                        if inflater.eof and len(out) > 100:
                            tables += out
                    except zlib.error:
                        pass
                    at = data.find(header, at + 1)
            self._binaries[path] = (text, tables)
        return self._binaries[path]


# ------------------------------------------------------------------ signatures as text
def split_params(text: str) -> list[str]:
    """Split a parameter list at top-level commas."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def keywords_from_signature(params: str) -> list[str] | None:
    """Keyword names of a Cython signature such as ``self, _ndarray_base a, axis=None, *args``."""
    names, positional_only = [], []
    for part in split_params(params):
        if part == "/":
            positional_only = list(names)
            continue
        if part.startswith("**"):
            return OPEN
        if part.startswith("*"):
            continue
        name = part.split("=")[0].split(":")[0].strip().split()[-1]  # drop Cython types
        if name not in ("self", "cls"):
            names.append(name)
    return [n for n in names if n not in positional_only]


def compiled_signatures(text: list[str], owner: str | None) -> dict[str, list[str] | None]:
    """name -> keywords for the ``name(...)`` (owner None) or ``owner.name(...)`` lines."""
    prefix = "" if owner is None else re.escape(owner) + r"\."
    pattern = re.compile(rf"^{prefix}([A-Za-z_][A-Za-z0-9_]*)\((.*)\)(?: -> .*)?$")
    found: dict[str, list[str] | None] = {}
    for line in text:
        match = pattern.match(line)
        if match and match.group(1) not in found:
            found[match.group(1)] = keywords_from_signature(match.group(2))
    return found


# ------------------------------------------------------------------ Python functions
def function_keywords(node: ast.FunctionDef) -> list[str] | None:
    args = node.args
    names = [a.arg for a in args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
    if args.kwarg is None:
        return names
    kwargs = args.kwarg.arg
    popped: list[str] = []
    handed_on = False
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == kwargs
                and func.attr in ("pop", "get")
                and sub.args
                and isinstance(sub.args[0], ast.Constant)
            ):
                popped.append(sub.args[0].value)
            if any(isinstance(k.value, ast.Name) and k.value.id == kwargs for k in sub.keywords if k.arg is None):
                handed_on = True  # f(**kwargs)
            if any(isinstance(a, ast.Name) and a.id == kwargs for a in sub.args):
                handed_on = True  # f(kwargs)
        if isinstance(sub, ast.Assign) and isinstance(sub.value, ast.Dict):
            if any(isinstance(t, ast.Name) and t.id == "allowed_kwargs" for t in sub.targets):
                for value in sub.value.values:
                    if isinstance(value, (ast.List, ast.Tuple)):
                        popped += [e.value for e in value.elts if isinstance(e, ast.Constant)]
                handed_on = False
                return sorted(set(names + popped))
    if handed_on or not popped:
        return OPEN
    return sorted(set(names + popped), key=(names + popped).index)


def call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return None


def dotted(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return None if head is None else head + [node.attr]
    return None


def absolute(module: str, target: str | None, level: int, is_package: bool) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


class Resolver:
    def __init__(self, wheel: Wheel) -> None:
        self.wheel = wheel
        self.unknown: list[str] = []

    def bindings(self, module: str) -> dict[str, Any]:
        """The last top-level binding of each name in a Python module (also inside if/try)."""
        kind, path = self.wheel.source_of(module)
        tree = self.wheel.tree(path)
        is_package = path.endswith("__init__.py")
        found: dict[str, Any] = {}

        def visit(body: list[ast.stmt]) -> None:
            for stmt in body:
                if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
                    found[stmt.name] = stmt
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:  # greater: ufunc = _core.greater
                    if isinstance(stmt.target, ast.Name):
                        found[stmt.target.id] = stmt.value
                elif isinstance(stmt, ast.Assign):
                    for target in stmt.targets:
                        for name in [target, *getattr(target, "elts", [])]:
                            if isinstance(name, ast.Name):
                                found[name.id] = stmt.value
                elif isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
                    source = absolute(module, stmt.module, stmt.level, is_package)
                    for alias in stmt.names:
                        found[alias.asname or alias.name] = ("from", source, alias.name)
                elif isinstance(stmt, ast.Import):
                    for alias in stmt.names:
                        found[alias.asname or alias.name.split(".")[0]] = ("import", alias.asname and alias.name)
                elif isinstance(stmt, (ast.If, ast.Try)):
                    visit(stmt.body)
                    visit(getattr(stmt, "orelse", []))
                    for handler in getattr(stmt, "handlers", []):
                        visit(handler.body)

        visit(tree.body)
        return found

    def entry(self, module: str, name: str, depth: int = 0) -> dict[str, Any]:
        if depth > 20:
            raise RecursionError(f"{module}.{name}")
        if module == "numpy" or module.startswith("numpy."):
            return {"kind": "numpy", "keywords": OPEN}
        source = self.wheel.source_of(module)
        if source is None:
            if self.wheel.source_of(f"{module}.{name}") is not None:
                return {"kind": "module", "keywords": OPEN}
            self.unknown.append(f"{module}.{name} (module not in the wheel)")
            return {"kind": "unknown", "keywords": OPEN}
        if self.wheel.source_of(f"{module}.{name}") is not None:
            return {"kind": "module", "keywords": OPEN}
        kind, path = source
        if kind == "so":
            return self.compiled_entry(module, path, name)
        bound = self.bindings(module).get(name)
        return self.entry_of_binding(module, name, bound, depth)

    def entry_of_binding(self, module: str, name: str, bound: Any, depth: int) -> dict[str, Any]:
        if bound is None:
            self.unknown.append(f"{module}.{name} (not bound)")
            return {"kind": "unknown", "keywords": OPEN}
        if isinstance(bound, tuple) and bound[0] == "from":
            return self.entry(bound[1], bound[2], depth + 1)
        if isinstance(bound, tuple) and bound[0] == "import":
            return {"kind": "module", "keywords": OPEN}
        if isinstance(bound, ast.FunctionDef):
            return {"kind": "function", "keywords": function_keywords(bound)}
        if isinstance(bound, ast.ClassDef):
            init = next((s for s in bound.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
            return {"kind": "class", "keywords": function_keywords(init) if init else []}
        factory = call_name(bound)
        if factory in UFUNC_FACTORIES:
            return {"kind": "ufunc", "keywords": None}
        if factory is not None:
            return {"kind": "object", "keywords": OPEN}  # an ElementwiseKernel, a functools.partial, ...
        path = dotted(bound)
        if path is not None:  # an alias: other_name or _core.name
            if len(path) == 1:
                return self.entry(module, path[0], depth + 1)
            head = self.bindings(module).get(path[0])
            if isinstance(head, tuple) and head[0] == "from":
                return self.entry(".".join([head[1], head[2], *path[1:-1]]), path[-1], depth + 1)
            if isinstance(head, tuple) and head[0] == "import":
                return self.entry(".".join([head[1] or path[0], *path[1:-1]]), path[-1], depth + 1)
        return {"kind": "constant", "keywords": OPEN}

    def compiled_entry(self, module: str, path: str, name: str) -> dict[str, Any]:
        text, tables = self.wheel.strings(path)
        signatures = compiled_signatures(text, None)
        if name in signatures:
            return {"kind": "function", "keywords": signatures[name]}
        constructor = compiled_signatures(text, name)
        if "__init__" in constructor or "__new__" in constructor:
            return {"kind": "class", "keywords": constructor.get("__init__", OPEN)}
        everything = "\n".join(text).encode() + tables
        if any(factory.encode() in everything for factory in UFUNC_FACTORIES):
            return {"kind": "ufunc", "keywords": None}
        self.unknown.append(f"{module}.{name} (compiled, no signature)")
        return {"kind": "unknown", "keywords": OPEN}

    def namespace(self, module: str) -> dict[str, dict[str, Any]]:
        out = {}
        for name, bound in sorted(self.bindings(module).items()):
            if name.startswith("_"):
                continue
            out[name] = self.entry_of_binding(module, name, bound, 0)
        return out


def class_members(wheel: Wheel, so_module: str, owner: str, symbol_class: str) -> dict[str, dict[str, Any]]:
    """Methods (with keywords), properties and special methods of a Cython class."""
    _, path = wheel.source_of(so_module)
    text, _ = wheel.strings(path)
    members: dict[str, dict[str, Any]] = {}
    for name, keywords in compiled_signatures(text, owner).items():
        members[name] = {"kind": "method", "keywords": keywords}
    getprop = re.compile(rf"^__pyx_getprop_\w*_{len(symbol_class)}{symbol_class}_(\w+)$")
    special = re.compile(rf"^__pyx_pw_\w*_{len(symbol_class)}{symbol_class}_\d+(__\w+__)$")
    for line in text:
        if match := getprop.match(line):
            members.setdefault(match.group(1), {"kind": "attribute", "keywords": OPEN})
        if (match := special.match(line)) and "___" not in match.group(1):
            members.setdefault(match.group(1), {"kind": "method", "keywords": OPEN})
    return members


def ufunc_methods(wheel: Wheel) -> dict[str, dict[str, Any]]:
    _, path = wheel.source_of("cupy._core._kernel")
    text, _ = wheel.strings(path)
    methods = {
        name: entry
        for name, entry in class_members(wheel, "cupy._core._kernel", "ufunc", "ufunc").items()
        if not name.startswith("_") or name == "__call__"
    }
    lines = "\n".join(text)
    doc = lines[lines.index("ufunc.__call__(self, *args, **kwargs)") :].split("Returns:")[0]
    documented = re.findall(r"^    (\w+)(?: \(|:)", doc, flags=re.M)
    documented = [n for n in documented if n != "args"]
    for extra in UFUNC_CALL_EXTRA:
        if f"__pyx_v_{extra}" not in text:
            raise SystemExit(f"ufunc.__call__: no sign of the keyword {extra!r} in _kernel's symbols")
    methods["__call__"] = {"kind": "method", "keywords": documented + list(UFUNC_CALL_EXTRA)}
    for name in ("nin", "nout", "nargs", "name", "types"):
        methods.setdefault(name, {"kind": "attribute", "keywords": OPEN})
    return methods


def compact_json(value: Any, depth: int = 0) -> str:
    """JSON with one API entry per line (readable in a diff when CuPy changes)."""
    if not isinstance(value, dict) or "kind" in value:
        return json.dumps(value, sort_keys=True)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(key)}: {compact_json(value[key], depth + 1)}" for key in sorted(value)]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}" + ("\n" if depth == 0 else "")


def main(wheel_path: str) -> None:
    wheel = Wheel(Path(wheel_path))
    resolver = Resolver(wheel)
    namespaces = {module: resolver.namespace(module) for module in NAMESPACES}
    namespaces["cupy.random"]["Generator"] = {"kind": "class", "keywords": ["bit_generator"]}  # lazy __getattr__
    members = class_members(wheel, "cupy._core.core", "_ndarray_base", "_ndarray_base")
    members.update(class_members(wheel, "cupy._core.core", "ndarray", "ndarray"))  # the Python subclass
    ndarray = {name: entry for name, entry in members.items() if not name.startswith("_") or name.startswith("__")}
    generator = {
        name: entry
        for name, entry in class_members(wheel, "cupy.random._generator_api", "Generator", "Generator").items()
        if not name.startswith("_")
    }
    api = {
        "about": (
            "CuPy's API as the stand-in GPU device allows it (minigen/testing/standin.py). "
            "Generated by minigen/testing/_make_cupy_api.py from the wheel named below; "
            "keywords null = any keyword accepted."
        ),
        "cupy_version": wheel.version,
        "wheel": Path(wheel_path).name,
        "namespaces": namespaces,
        "ndarray": ndarray,
        "ufunc": ufunc_methods(wheel),
        "random.Generator": generator,
    }
    OUT.write_text(compact_json(api))
    counts = {name: len(members) for name, members in namespaces.items()}
    print(f"wrote {OUT}: CuPy {wheel.version}, {counts}, ndarray {len(ndarray)}, Generator {len(generator)}")
    kinds: dict[str, int] = {}
    for members in namespaces.values():
        for entry in members.values():
            kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    print("kinds:", kinds)
    if resolver.unknown:
        print("not resolved (any keyword allowed):", ", ".join(resolver.unknown))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
