# SPDX-License-Identifier: Apache-2.0
"""The type stubs (*.pyi) describe the real objects: every public name,
method and parameter, read from the stubs with ast and compared with the
modules as built."""

import ast
import inspect
import pathlib

import pytest

import loopwatch
import loopwatch.asgi
import loopwatch.run
from loopwatch import _native

PKG = pathlib.Path(loopwatch.__file__).resolve().parent
MODULES = {"__init__": loopwatch, "asgi": loopwatch.asgi, "run": loopwatch.run,
           "_native": _native}


def parse(stub):
    return ast.parse((PKG / (stub + ".pyi")).read_text())


def stub_names(tree):
    """{name: node} of the stub's top level (functions, classes, annotated
    or assigned names)."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node
    return out


def stub_all(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def stub_params(fn, drop_self=False):
    """[(name, kind, has default)] as inspect.Parameter kinds."""
    a = fn.args
    P = inspect.Parameter
    positional = [(x, P.POSITIONAL_ONLY) for x in a.posonlyargs] + \
                 [(x, P.POSITIONAL_OR_KEYWORD) for x in a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(x.arg, kind, d is not None) for (x, kind), d in zip(positional, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, P.VAR_POSITIONAL, False))
    out += [(x.arg, P.KEYWORD_ONLY, d is not None) for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append((a.kwarg.arg, P.VAR_KEYWORD, False))
    if drop_self:
        assert out and out[0][0] == "self", ast.dump(fn)
        out = out[1:]
    return out


def real_params(obj):
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(obj).parameters.values()]


def public_api(module):
    """The module's own public objects: __all__, else what it defines."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__}


@pytest.mark.parametrize("stub", ["__init__", "asgi", "run"])
@pytest.mark.skipif(not hasattr(ast, "unparse"),
                    reason="compares annotations with ast.unparse (3.9+); the stubs are the same "
                           "files on every Python")
def test_python_module_stub(stub):
    module = MODULES[stub]
    tree = parse(stub)
    names = stub_names(tree)
    if hasattr(module, "__all__") or stub_all(tree) is not None:
        assert stub_all(tree) == list(module.__all__)
    public = {n for n in names if not n.startswith("_")
              and not (isinstance(names[n], ast.Assign) and stub == "asgi")}
    # asgi.pyi's type aliases (Scope, Receive, ...) are stub-only helpers.
    assert public_api(module) <= set(names), (public_api(module), set(names))
    for name in sorted(public | ({"__version__"} & set(names))):
        node = names[name]
        assert hasattr(module, name), "%s.pyi names %s, which %s lacks" % (stub, name, module.__name__)
        real = getattr(module, name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert callable(real)
            assert stub_params(node) == real_params(real), name
            assert isinstance(node, ast.AsyncFunctionDef) == inspect.iscoroutinefunction(real), name
        elif isinstance(node, ast.ClassDef):
            check_class(node, real)
        elif isinstance(node, ast.AnnAssign):
            ann = ast.unparse(node.annotation)
            if ann in ("str", "int", "bool", "float"):
                assert type(real).__name__ == ann, (name, real)


def check_class(node, cls):
    methods = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    attrs = {n.target.id for n in node.body
             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    real = {n for n, v in vars(cls).items()
            if callable(v) and (not n.startswith("_") or n in ("__init__", "__call__"))}
    assert set(methods) == real, (cls, set(methods), real)
    for name, fn in methods.items():
        m = getattr(cls, name)
        rp = real_params(m)
        assert rp and rp[0][0] == "self", (cls, name, rp)
        assert stub_params(fn, drop_self=True) == rp[1:], (cls, name)
        assert isinstance(fn, ast.AsyncFunctionDef) == inspect.iscoroutinefunction(m), (cls, name)
    if cls is loopwatch.asgi.LoopwatchMiddleware:
        async def app(scope, receive, send):
            pass
        instance = cls(app)
        for a in attrs:
            assert hasattr(instance, a), (cls, a)
        assert instance.app is app


@pytest.mark.skipif(not hasattr(ast, "unparse"),
                    reason="compares annotations with ast.unparse (3.9+); the stubs are the same "
                           "files on every Python")
def test_native_stub(monkeypatch):
    # An inert Loop (loopwatch off) to call the methods on: no segment.
    monkeypatch.delenv("LOOPWATCH_SEGMENT", raising=False)
    tree = parse("_native")
    names = stub_names(tree)
    real_public = {n for n in dir(_native) if not n.startswith("_")}
    assert set(n for n in names if not n.startswith("_")) == real_public

    loop_node = names["Loop"]
    members = {}
    for n in loop_node.body:
        if isinstance(n, ast.FunctionDef):
            members[n.name] = n
    public_members = {n for n in members if not n.startswith("_")}
    assert public_members == {n for n in dir(_native.Loop) if not n.startswith("_")}
    properties = {n for n, f in members.items()
                  if any(ast.unparse(d) == "property" for d in f.decorator_list)}
    assert properties == {n for n, v in vars(_native.Loop).items()
                          if type(v).__name__ == "getset_descriptor" and not n.startswith("_")}

    # __init__: the keyword names and which are optional, as the C code
    # parses them (unknown keywords are refused, required ones enforced).
    params = stub_params(members["__init__"], drop_self=True)
    kwargs = {"name": "stub-check", "interval_ns": 1000000, "kind": "asyncio",
              "task_fn": None, "report_after_ns": 0}
    assert [p[0] for p in params] == list(kwargs)
    loop = _native.Loop(**kwargs)
    assert loop.slot == -1 and loop.closed is True  # inert: loopwatch is off
    required = {name: kwargs[name] for name, _, has_default in params if not has_default}
    _native.Loop(**required)
    for name in required:
        with pytest.raises(TypeError):
            _native.Loop(**{k: v for k, v in required.items() if k != name})
    with pytest.raises(TypeError):
        _native.Loop(**dict(kwargs, nonsense=1))

    # Methods: the stub's arity is the one the C method takes.
    samples = {"ready": True, "label": "x", "method": "GET", "path": "/", "token": 0}
    for name in sorted(public_members - properties - {"__init__"}):
        fn = members[name]
        args = [samples[p[0]] for p in stub_params(fn, drop_self=True)]
        getattr(loop, name)(*args)
        with pytest.raises(TypeError):
            getattr(loop, name)(*args, "one too many")

    # Module functions: arity, and report_now's parameter is a Loop.
    for name in sorted(real_public - {"Loop"}):
        fn = names[name]
        params = stub_params(fn)
        if name == "report_now":
            assert [p[0] for p in params] == ["loop"]
            with pytest.raises(TypeError, match="loop"):
                _native.report_now("not a loop")
            continue
        if name == "redact_query":
            assert [p[0] for p in params] == ["text"]
            assert _native.redact_query("GET /x?key=s3cr3t&v") == "GET /x?key=REDACTED&v"
            with pytest.raises(TypeError):
                _native.redact_query(b"x")
            continue
        if name == "parse_duration":
            assert [p[0] for p in params] == ["text"]
            assert _native.parse_duration("1m30s") == 90 * 10**9
            with pytest.raises(TypeError):
                _native.parse_duration(b"5s")
            with pytest.raises(TypeError):
                _native.parse_duration("5s", "one too many")
            continue
        assert params == [], name
        if name != "shutdown":  # shutdown() stops this process's reporter
            with pytest.raises(TypeError):
                getattr(_native, name)(1)
    assert isinstance(_native.version(), str) and _native.version() == loopwatch.__version__
    assert isinstance(_native.now_ns(), int) and _native.enabled() is False
