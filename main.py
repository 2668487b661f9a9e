"""GUNN training driver (port of main.lua): python main.py -netType gunn-15 -dataset cifar10 ..."""
import math
import sys
import time

import torch

import checkpoints
import models
import opts
from dataloader import DataLoader
from epoch_log import EpochLog
from errors import GunnError
from train import Trainer


def pick_device(opt):
    gpus = torch.cuda.device_count() if opt.device != 'cpu' else 0
    if opt.device == 'cuda' and gpus == 0:
        raise GunnError('-device cuda, but no GPU is visible')
    if opt.nGPU > max(gpus, 1):
        raise GunnError(f'-nGPU {opt.nGPU}, but only {gpus} GPU(s) are visible')
    return 'cuda' if gpus else 'cpu'


def main(argv):
    opt = opts.parse(argv)
    device = pick_device(opt)
    torch.manual_seed(opt.manualSeed)

    # Load previous checkpoint, if it exists
    checkpoint, optimState = checkpoints.latest(opt)
    if checkpoint is None and opt.optimState != 'none':
        optimState = checkpoints.load_optim_state(opt.optimState)

    model, criterion = models.setup(opt, checkpoint)
    model.to(device)
    trainLoader, valLoader = DataLoader.create(opt)
    trainer = Trainer(model, criterion, opt, optimState, device)

    if opt.testOnly:
        top1, top5 = trainer.test(0, valLoader)
        print(' * Results top1: %6.3f  top5: %6.3f' % (top1, top5))
        return

    startEpoch = checkpoint['epoch'] + 1 if checkpoint else opt.epochNumber
    bestTop1 = checkpoint['bestTop1'] if checkpoint else math.inf
    bestTop5 = checkpoint['bestTop5'] if checkpoint else math.inf
    log = EpochLog(opt.save, startEpoch)
    for epoch in range(startEpoch, opt.nEpochs + 1):
        started = time.perf_counter()
        trainTop1, trainTop5, trainLoss = trainer.train(epoch, trainLoader)
        trainSeconds = time.perf_counter() - started
        testTop1, testTop5 = trainer.test(epoch, valLoader)

        bestModel = testTop1 < bestTop1
        if bestModel:
            bestTop1, bestTop5 = testTop1, testTop5
            print(' * Best model ', '%.14g' % testTop1, '%.14g' % testTop5, sep='\t')
        checkpoints.save(epoch, model, trainer.optimState, bestModel, opt, (bestTop1, bestTop5))
        log.add(epoch=epoch, lr=trainer.learningRate(epoch), train_loss=trainLoss, train_top1=trainTop1,
                train_top5=trainTop5, test_top1=testTop1, test_top5=testTop5,
                seconds=round(time.perf_counter() - started, 3),
                images_per_s=round(trainLoader.numImages() / trainSeconds, 1))

    print(' * Finished top1: %6.3f  top5: %6.3f' % (bestTop1, bestTop5))


if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except GunnError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
