"""Which -netType and -dataset a Torch7 file of the original code holds, recognised from its module tree and
classifier size (the tools' guessing; the reading itself is torch7/t7.py)."""
import torch

import models
from datasets import N_CLASSES
from support.errors import GunnError
from torch7.serialization import DamagedFile
from torch7.t7 import classifier_outputs, found_modules, t7_state


def guess_dataset(root, source):
    """The -dataset whose class count the classifier has (10 outputs: cifar10, the Lua code's dataset,
    rather than this port's digits)."""
    outputs = classifier_outputs(root, source)
    for dataset, count in N_CLASSES.items():
        if count == outputs:
            return dataset
    known = ', '.join(f'{d} {c}' for d, c in N_CLASSES.items())
    raise GunnError(f'{source} has a {outputs}-way classifier; no -dataset has that many classes ({known})')


def guess_netType(root, dataset, source):
    """The registered -netType whose network for dataset takes exactly the weights of the tree."""
    tried = []
    for name in models.list_models():
        build = models.get_model(name)
        if dataset not in build.datasets:
            continue
        tried.append(name)
        with torch.device('meta'):  # only the shapes are compared: no memory, no initialisation
            candidate = build(N_CLASSES[dataset], dataset)
        try:
            t7_state(root, candidate, source, name)
            return name
        except DamagedFile:
            raise
        except GunnError:
            continue
    raise GunnError(f'{source} is none of the -netType models for {dataset} ({", ".join(tried)}): '
                    f'{found_modules(root)}')
