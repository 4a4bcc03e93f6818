"""The house rules of docs/ARCHITECTURE.md, checked on the source: ``ratchet/`` is sans-I/O and never imports
``voipgw``; no import cycle between voipgw modules (type-only imports count: a cycle is a design smell either
way); only ``voipgw/sip/`` imports sippy; ``ops/`` does not pull in the phone or the SIP stack; no module over
800 lines (the call engine and the B2BUA under 500)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 800
SMALL = {"voipgw/phone.py": 500, "voipgw/gateway/b2bua.py": 500}
SANS_IO_FORBIDDEN = ("voipgw", "socket", "asyncio", "threading", "time", "sippy", "pjsua2", "selectors", "subprocess")


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports (absolute, relative resolved), at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {**_modules("voipgw"), **_modules("ratchet")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for this size)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_ratchet_is_sans_io() -> None:
    for name, path in _modules("ratchet").items():
        bad = {m for m in _imports(path, name) if m.split(".")[0] in SANS_IO_FORBIDDEN}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: ratchet/ must stay sans-I/O"


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_sip_imports_sippy() -> None:
    for name, path in _modules("voipgw").items():
        if name.startswith("voipgw.sip"):
            continue
        bad = {m for m in _imports(path, name) if m.split(".")[0] == "sippy"}
        assert not bad, f"{path.relative_to(ROOT)} imports sippy: only voipgw/sip/ may"


def test_ops_config_does_not_load_the_phone_or_sip() -> None:
    """Loading the service configuration (``voipgw check-config``, the control socket) must not start pulling in
    the SIP stack and sippy: checked in a fresh interpreter, on what is really imported."""
    probe = (
        "import sys, voipgw.ops.config; "
        "print(sorted(m for m in sys.modules if m == 'voipgw.phone' or m.startswith(('voipgw.sip', 'sippy'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_module_sizes() -> None:
    """Both packages (ratchet's handshake and session were split into messages/handshake and
    media_state/sealer/opener/session)."""
    for _name, path in {**_modules("voipgw"), **_modules("ratchet")}.items():
        rel = str(path.relative_to(ROOT))
        lines = len(path.read_text().splitlines())
        limit = SMALL.get(rel, MAX_LINES)
        assert lines <= limit, f"{rel} has {lines} lines (limit {limit}): split it along its seams"


def _private_reach_ins(source: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls``: another object's private attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_reach_in_detector() -> None:
    assert _private_reach_ins("self._a = phone._nonces\ncls._b\nx.__class__") == ["1: phone._nonces"]


def test_the_gateway_neither_subclasses_phone_nor_reaches_into_other_objects() -> None:
    for name, path in _modules("voipgw").items():
        if not name.startswith("voipgw.gateway"):
            continue
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                assert not any(b.split(".")[-1] == "Phone" for b in bases), f"{path.name}: {node.name}({bases})"
        assert _private_reach_ins(source) == [], f"{path.relative_to(ROOT)} touches private attributes"
