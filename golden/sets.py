"""Which cases a golden set should hold, and which of their files it lacks.

A set written by lua/generate.sh lists its cases in ``cases.json`` ({"cases": {NAME: {"kind", "files"}}});
the reference set made before the drivers (../shared/parity) has no manifest and holds the cases of
REFERENCE. A gunn_train case's checkpoint ``NAME_init.t7`` is compared as a case of its own (kind
torch7_import), as the reference set has always listed it.
"""
import json
import os
from typing import NamedTuple

MANIFEST = 'cases.json'
# report order: the kinds in the order the checks have always run
KINDS = ('gunnlayer', 'gunn_train', 'torch7_import', 'gunn_logits', 'extras', 'lua_rng', 'lua_init', 'lua_run',
         'transforms')
REFERENCE = {'gunnlayer_cifar': 'gunnlayer', 'gunnlayer_imagenet': 'gunnlayer', 'gunn15_cifar10': 'gunn_train',
             'gunn18_imagenet': 'gunn_logits', 'extras': 'extras', 'lua_rng': 'lua_rng', 'lua_init': 'lua_init',
             'lua_run_cifar10': 'lua_run', 'transforms': 'transforms'}
CHECKPOINT = '_init.t7'


class Case(NamedTuple):
    name: str
    kind: str
    files: tuple
    folder: str

    def missing(self):
        """The files of the case that are not in its folder."""
        return [f for f in self.files if not os.path.isfile(os.path.join(self.folder, f))]


def checkpoint_base(case):
    """The gunn_train case whose checkpoint a torch7_import case reads."""
    return case[:-len(CHECKPOINT)]


def listed(folder):
    """(name, kind, files) as the manifest lists them, or the reference set's cases without one."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return [(name, kind, (name + '.json', name + '.bin') + ((name + CHECKPOINT,) if kind == 'gunn_train' else ()))
                for name, kind in REFERENCE.items()]
    with open(path) as f:
        cases = json.load(f)['cases']
    return [(name, entry['kind'], tuple(entry['files'])) for name, entry in cases.items()]


def expected(folder):
    """Every case the set in folder should hold, in report order."""
    cases = []
    for name, kind, files in listed(folder):
        data = tuple(f for f in files if f != name + CHECKPOINT)
        cases.append(Case(name, kind, data, folder))
        if name + CHECKPOINT in files:
            cases.append(Case(name + CHECKPOINT, 'torch7_import', data + (name + CHECKPOINT,), folder))
    rank = {kind: k for k, kind in enumerate(KINDS)}
    return sorted(cases, key=lambda case: rank.get(case.kind, len(KINDS)))  # stable: listed order within a kind
