"""The house: the root shows the Lua map, the folders import only downward, and nothing imports in a cycle."""
import ast
import os

from helpers import ROOT

LUA_MAP = {'main.py', 'opts.py', 'train.py', 'checkpoints.py', 'dataloader.py', 'parity.py'}
# folders that must not import the root modules (nor the folders that do)
BASEMENT = {'support': {'support'}, 'torch7': {'support', 'torch7'}}


def project_modules():
    """{module name: file} of every Python file of the project (tests and the Lua half aside)."""
    modules = {}
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith('.') and d not in ('tests', 'lua', '__pycache__')]
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return modules


def imports(path, module, known):
    """The project modules that the file imports, at any depth of its code."""
    found = set()
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
            # 'from package import module' depends on the module, not on the package's __init__
            names = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found - {module}


def graph():
    modules = project_modules()
    return {m: imports(path, m, modules) for m, path in modules.items()}


def test_the_root_holds_the_lua_map_and_the_parity_command():
    assert {f for f in os.listdir(ROOT) if f.endswith('.py')} == LUA_MAP


def test_support_and_torch7_import_nothing_above_them():
    for module, imported in graph().items():
        top = module.split('.')[0]
        if top in BASEMENT:
            assert {m.split('.')[0] for m in imported} <= BASEMENT[top], (module, imported)


def test_no_import_cycle():
    edges = graph()
    state = {}

    def visit(module, path):
        state[module] = 'open'
        for other in edges[module]:
            assert state.get(other) != 'open', ' -> '.join(path + [other])
            if other not in state:
                visit(other, path + [other])
        state[module] = 'done'

    for module in edges:
        if module not in state:
            visit(module, [module])
