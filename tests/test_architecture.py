"""The shape of the code: the core knows nothing of Gradio, and importing is cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The programs an export ships (standalone/, outside the app's package): they run elsewhere, without the app.
STANDALONE = ROOT / "standalone"
CORE = [p for p in (ROOT / "tl_app").rglob("*.py")
        if "ui" not in p.relative_to(ROOT / "tl_app").parts and STANDALONE not in p.parents]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level and node.module and node.module.split(".")[0] == "ui":
            names.add("tl_app.ui")
    return names


def test_no_core_module_imports_gradio_or_the_ui():
    assert CORE, "no core modules found"
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & {"gradio", "gradio_client", "tl_app.ui"})
                 for p in CORE}
    offenders = {k: v for k, v in offenders.items() if v}
    # cli.py may start the UI, but only inside the `serve` verb (a function-level import of .ui.app).
    assert offenders == {} or set(offenders) == {"tl_app/cli.py"} and offenders["tl_app/cli.py"] == ["tl_app.ui"], offenders


def test_the_programs_an_export_ships_need_neither_torch_nor_the_app():
    """predict.py: onnxruntime, Pillow, numpy; the Space's app.py: those and gradio (and predict.py)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    allowed = {"predict.py": {"numpy", "PIL", "onnxruntime"}, "app.py": {"numpy", "PIL", "onnxruntime", "gradio",
                                                                         "predict"}}
    found = {p.name for p in STANDALONE.glob("*.py")}
    assert found == set(allowed)
    for name, ok in allowed.items():
        assert _imports(STANDALONE / name) - stdlib <= ok, (name, _imports(STANDALONE / name) - stdlib - ok)


def test_cli_imports_ui_only_inside_serve():
    tree = ast.parse((ROOT / "tl_app" / "cli.py").read_text(encoding="utf-8"))
    for node in tree.body:  # module level: no ui import
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("ui") and not (node.module or "").startswith(".ui")


def test_importing_the_package_and_core_loads_no_heavy_library():
    code = ("import sys, tl_app, tl_app.cli, tl_app.project, tl_app.importer, tl_app.train, tl_app.models, "
            "tl_app.predict, tl_app.review, tl_app.runs, tl_app.runner\n"
            "heavy = [m for m in ('torch', 'fastai', 'gradio', 'torchvision', 'timm') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_importing_does_not_touch_the_disk(tmp_path):
    """Nothing happens at import time: no folders appear in the data directory."""
    home = tmp_path / "home"
    code = "import tl_app, tl_app.cli, tl_app.project, tl_app.ui.app"
    env = {"TL_HOME": str(home), "PATH": "/usr/bin:/bin", "GRADIO_ANALYTICS_ENABLED": "False",
           "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not home.exists()
