"""The optional packages: each is imported where it is needed, and its absence is one line naming it."""
import importlib

from support.errors import GunnError


def require(module, purpose, package=None):
    """The module imported, or a GunnError: '<purpose> needs the <package> package: pip install <package>'."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = package or module.partition('.')[0]
        raise GunnError(f'{purpose} needs the {package} package: pip install {package}') from None


def available(module):
    """Whether the module imports (for what is only done when it does)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
