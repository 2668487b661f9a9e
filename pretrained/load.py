"""Opening a trained network for inference, with its labels and input pipeline (shared by the tools)."""
import os

import torch

import checkpoints
import models
import opts
from datasets import N_CLASSES, digits, imagenet
from datasets import transforms as t
from datasets.cifar import VARIANTS
from pretrained import torch7
from support import fileio
from support.errors import GunnError
from torch7 import t7

LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'labels')


def class_names(dataset):
    """Label names in output order (labels/<dataset>.txt; imagenet.txt is the list of the Lua imagenet.lua)."""
    with open(os.path.join(LABELS, f'{dataset}.txt'), encoding='utf-8') as f:
        return f.read().splitlines()


def preprocess(dataset):
    """RGB 0..1 CHW image -> network input, as the dataset's validation pipeline."""
    if dataset == 'imagenet':
        return t.Compose([t.Scale(256), t.ColorNormalize(imagenet.MEANSTD), t.CenterCrop(224)])
    meanstd = digits.MEANSTD if dataset == 'digits' else VARIANTS[dataset].meanstd
    # CIFAR-layout images are 32x32 with the mean/std on the 0..255 scale
    return t.Compose([lambda img: t.scale(img * 255, 32, 32), t.ColorNormalize(meanstd)])


def input_size(dataset):
    return 224 if dataset == 'imagenet' else 32


def device():
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def check_files(paths):
    for path in paths:
        fileio.require_file(path, 'file')


def load_images(paths, transform):
    """[N, 3, H, W] batch of the preprocessed images (a GunnError names any file that is not an image)."""
    return torch.stack([transform(imagenet.load_image(path)) for path in paths])


def _classifier_outputs(state, path):
    """Rows of the last 2-D weight: the final nn.Linear in our networks (convolution weights are 4-D)."""
    rows = [v.shape[0] for k, v in state.items() if k.endswith('weight') and v.dim() == 2]
    if not rows:
        raise GunnError(f'{path} holds no classifier (nn.Linear) weights')
    return rows[-1]


def _checked_labels(path, dataset, outputs):
    if dataset not in N_CLASSES:
        raise GunnError(f'unknown -dataset {dataset!r}; available: {", ".join(N_CLASSES)}')
    labels = class_names(dataset)
    if outputs != len(labels):
        raise GunnError(f'{path} has a {outputs}-way classifier, but {dataset} has {len(labels)} classes')
    return labels


def _build(netType, dataset):
    # the memory options only choose how GunnLayer computes gradients: irrelevant for inference
    return models.create(opts.defaults(netType=netType, dataset=dataset))


def _from_t7(path, netType, dataset):
    root = t7.load_t7(path)
    dataset = dataset or torch7.guess_dataset(root, path)
    labels = _checked_labels(path, dataset, t7.classifier_outputs(root, path))
    netType = netType or torch7.guess_netType(root, dataset, path)
    model = _build(netType, dataset)
    return model, netType, dataset, labels, {'model': t7.t7_state(root, model, path, netType)}


def _from_checkpoint(path, netType, dataset):
    checkpoint = checkpoints.load_file(path)
    netType, dataset = netType or checkpoint.get('netType'), dataset or checkpoint.get('dataset')
    if not netType or not dataset:
        raise GunnError(f'{path} does not say which network it holds: give -netType and -dataset')
    labels = _checked_labels(path, dataset, _classifier_outputs(checkpoint['model'], path))
    return _build(netType, dataset), netType, dataset, labels, checkpoint


def load_for_inference(path, netType=None, dataset=None):
    """(model in eval mode on the CPU, netType, dataset, class names) from one of our checkpoints (.pt:
    latest.pt, model_best.pt, convert_t7.py output) or a Torch7 file of the original code (.t7).
    netType/dataset override what the file says or what is guessed from a .t7."""
    read = _from_t7 if str(path).endswith('.t7') else _from_checkpoint
    model, netType, dataset, labels, checkpoint = read(path, netType, dataset)
    models.load_model_state(model, checkpoint, path, netType)
    return model.eval(), netType, dataset, labels
