"""Grading integrity: is a graded function the student's own code?

Hidden tests call ``require_own_code(function, forbidden)`` before they test a function the
student had to write. It fails (``AssertionError`` with the reason, which the grader reports)
unless

* the object is a plain Python function whose code was compiled in the notebook (not
  imported from ``helpers`` or anywhere else), and
* nothing it can reach calls a reference implementation: the names in its code (and in the
  code of its nested functions, lambdas and comprehensions, its default arguments, its
  closure, and the notebook functions and classes it calls) are resolved in its globals,
  attribute chains through modules are followed (``helpers.pruning.magnitude_mask``,
  ``reference.magnitude_mask``), and every object found is checked against ``forbidden``.
  Dynamic imports (``__import__``, ``importlib``, ``exec``/``eval``, a string naming a
  forbidden module) are refused too.

``forbidden`` names modules (``"helpers.pruning"``: the module, its submodules, and any
function or class defined in them) or single objects (``"helpers.tinyml.fit_table"``). The
check reads code and objects, never names, so renaming an import does not get past it.

Hidden tests are instructor code, so they may import this module; teaching modules never do.
"""
from __future__ import annotations

import builtins
import functools
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["require_own_code", "disqualify_unless_own", "require_full_int8", "violations"]

_MAX_OBJECTS = 10_000  # a bound on the walk (a notebook function reaches far fewer)
_PLAIN = (str, bytes, int, float, complex, bool, type(None))


def _dynamic() -> set[int]:
    """Ids of the ways to import or evaluate code by name at run time."""
    return {id(obj) for obj in (builtins.__import__, builtins.exec, builtins.eval,
                                builtins.compile, builtins.globals, builtins.vars,
                                importlib.import_module, importlib.__import__, sys.modules)}


def _origin(obj) -> str | None:
    """The module an object was defined in (a module's own name for a module)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, functools.partial):
        obj = obj.func
    try:
        module = getattr(obj, "__module__", None)
    except Exception:  # an object whose attribute access raises
        return None
    return module if isinstance(module, str) else None


def _public_module(origin: str, name: str, obj) -> str:
    """The shortest package that exposes ``obj`` as ``name``: ``helpers.pruning`` for what
    ``helpers.pruning.magnitude`` defines and the package re-exports (the name a student
    imported)."""
    parts = origin.split(".")
    for end in range(1, len(parts)):
        package = sys.modules.get(".".join(parts[:end]))
        if package is not None and getattr(package, name, None) is obj:
            return package.__name__
    return origin


def _qualified(obj) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    origin = _origin(obj)
    if origin and isinstance(name, str):
        if isinstance(obj, types.ModuleType):
            return name
        return f"{_public_module(origin, name, obj)}.{name}"
    return type(obj).__name__


class _Forbidden:
    """The forbidden modules (with their submodules and files) and objects."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        modules, self.objects, self.files = [], set(), []
        for name in self.names:
            try:
                module = importlib.import_module(name)
            except ImportError:
                module = None
            if module is not None:
                modules.append(name)
                path = getattr(module, "__file__", None) or ""
                self.files.append(str(Path(path).parent) + os.sep
                                  if path.endswith("__init__.py") else path)
                continue
            module_name, _, attribute = name.rpartition(".")
            try:
                self.objects.add(id(getattr(importlib.import_module(module_name), attribute)))
            except (ImportError, AttributeError, ValueError):
                raise ValueError(f"forbidden must name modules or objects, got {name!r}") from None
        self.modules = tuple(modules)

    def __contains__(self, obj) -> bool:
        if id(obj) in self.objects:
            return True
        origin = _origin(obj)
        return bool(origin) and any(origin == m or origin.startswith(m + ".")
                                    for m in self.modules)

    def named_in(self, text: str) -> bool:
        return any(text == name or text.startswith(name + ".") for name in self.names)

    def compiled_in(self, code: types.CodeType) -> bool:
        return any(file and code.co_filename.startswith(file) for file in self.files)


def _codes(code: types.CodeType):
    """A code object and every code object nested in it (functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def violations(function, forbidden: Iterable[str]) -> list[str]:
    """Why ``function`` is not the notebook's own code, one reason each (empty if it is).

    Args:
        function: The object the student defined (e.g. ``magnitude_mask``).
        forbidden: Modules or objects that implement the task (``"helpers.pruning"``).

    Returns:
        Reasons such as ``"magnitude_mask uses helpers.pruning.magnitude_mask (a reference
        implementation)"``; empty when the function is the student's own.

    Raises:
        ValueError: If an entry of ``forbidden`` names neither a module nor an object.
    """
    banned, dynamic = _Forbidden(forbidden), _dynamic()
    name = getattr(function, "__name__", None) or type(function).__name__
    if isinstance(function, types.MethodType):
        function = function.__func__
    if not isinstance(function, types.FunctionType):
        return [f"{name} must be a function defined in the notebook, got {_qualified(function)}"]
    if function.__module__ != "__main__" or function in banned:
        return [f"{name} is {_qualified(function)}, not a function defined in the notebook"]
    problems: list[str] = []
    seen: set[int] = set()
    todo = [function]
    while todo and len(seen) < _MAX_OBJECTS:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, _PLAIN):
            continue
        seen.add(id(obj))
        if obj in banned:
            problems.append(f"{name} uses {_qualified(obj)} (a reference implementation)")
        elif id(obj) in dynamic:
            problems.append(f"{name} imports or evaluates code by name ({_qualified(obj)})")
        elif isinstance(obj, type) and obj.__module__ == "__main__":
            todo += list(vars(obj).values())  # a notebook class: check its methods
        elif isinstance(obj, (staticmethod, classmethod)):
            todo.append(obj.__func__)
        elif isinstance(obj, property):
            todo += [part for part in (obj.fget, obj.fset, obj.fdel) if part is not None]
        elif isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            problems += _scan_function(name, obj, banned, todo)
    return sorted(set(problems))


def _scan_function(name: str, function: types.FunctionType, banned: _Forbidden,
                   todo: list) -> list[str]:
    """Queue every object ``function``'s code can reach; return what its code shows."""
    problems = []
    attrs: set[str] = set()
    for code in _codes(function.__code__):
        attrs.update(code.co_names)
        if banned.compiled_in(code):
            problems.append(f"{name} runs code compiled from {code.co_filename} "
                            "(a reference implementation)")
        problems += [f"{name} names {const!r} (a reference implementation)"
                     for const in code.co_consts
                     if isinstance(const, str) and banned.named_in(const)]
    scope = function.__globals__
    reached = [scope[attr] if attr in scope else sys.modules.get(attr,  # `import x` inside
                                                                 getattr(builtins, attr, None))
               for attr in attrs]
    reached += list(function.__defaults__ or ())
    reached += list((function.__kwdefaults__ or {}).values())
    for cell in function.__closure__ or ():
        try:
            reached.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    # follow attribute chains through modules: `helpers.pruning.magnitude_mask`
    frontier, known = [obj for obj in reached if isinstance(obj, types.ModuleType)], set()
    while frontier:
        module = frontier.pop()
        if id(module) in known:
            continue
        known.add(id(module))
        for attr in attrs:
            value = module.__dict__.get(attr)
            if value is None and "__getattr__" in module.__dict__:  # lazy names: helpers.X
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        value = getattr(module, attr)
                    except Exception:  # AttributeError, or a lazy import that fails
                        value = None
            if value is not None:
                reached.append(value)
                if isinstance(value, types.ModuleType):
                    frontier.append(value)
    todo += [obj for obj in reached if obj is not None and not isinstance(obj, _PLAIN)]
    return problems

def require_own_code(function, forbidden: Iterable[str]) -> None:
    """Fail unless ``function`` is the student's own code (see ``violations``).

    Args:
        function: The graded function, e.g. ``magnitude_mask``.
        forbidden: Modules or objects implementing the task, e.g. ``["helpers.pruning"]``.

    Raises:
        AssertionError: Naming the reason, e.g. ``"magnitude_mask is
            helpers.pruning.magnitude_mask, not a function defined in the notebook"``.
    """
    problems = violations(function, list(forbidden))
    if problems:
        raise AssertionError("; ".join(problems) + " (graded code must be your own)")


def _disqualify(namespace: dict, name: str, forbidden: list[str]) -> str:
    """Replace ``namespace[name]`` by a function raising the reason if it is not own code."""
    problems = violations(namespace.get(name), forbidden)
    if not problems:
        return ""
    message = "; ".join(problems) + " (graded code must be your own)"

    def disqualified(*args, **kwargs):
        raise AssertionError(message)

    disqualified.__integrity_message__ = message
    namespace[name] = disqualified
    return message


def disqualify_unless_own(namespace: dict, name: str, forbidden: Iterable[str]) -> None:
    """``require_own_code`` for a check in a cell of its own, before the function's tests.

    When ``namespace[name]`` is not the student's own code, it is replaced by a function
    that raises the same ``AssertionError``, so that every later test of it fails with the
    reason, and the error is raised here too. In IPython the check runs again after every
    later cell, so a reference bound to the name after this cell is replaced as well.

    Args:
        namespace: The notebook's globals (``globals()``).
        name: The graded function's name, e.g. ``"softmax_t"``.
        forbidden: Modules or objects implementing the task.

    Raises:
        AssertionError: If the function is not the student's own code.
    """
    forbidden = list(forbidden)
    shell = getattr(builtins, "get_ipython", lambda: None)()
    if shell is not None:
        def recheck(result) -> None:
            if not hasattr(namespace.get(name), "__integrity_message__"):
                _disqualify(namespace, name, forbidden)

        shell.events.register("post_run_cell", recheck)
    message = _disqualify(namespace, name, forbidden)
    if message:
        raise AssertionError(message)


def require_full_int8(flatbuffer: bytes) -> None:
    """Fail unless ``flatbuffer`` is a full-integer TFLite model (no float32 tensor at all).

    Accuracy points for a quantized model count only for the compression they are about:
    a float32 or dynamic-range file would keep its accuracy for free.

    Raises:
        AssertionError: Naming the float32 tensors found.
    """
    # imported here: it loads TensorFlow, which the code checks above do not need
    from helpers import measure

    details = measure.tflite_interpreter(flatbuffer).get_tensor_details()
    floats = [detail["name"] for detail in details if detail["dtype"] == np.float32]
    if floats:
        raise AssertionError(f"the model is not full int8: {len(floats)} of {len(details)} "
                             f"tensors are float32, e.g. {floats[0]!r}")
