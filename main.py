"""GUNN training driver (port of main.lua): python main.py -netType gunn-15 -dataset cifar10 ..."""
import math
import sys
import time

import torch

import checkpoints
import models
import opts
from dataloader import DataLoader
from support import command, distributed
from support.epoch_log import EpochLog, Events
from support.errors import RunStopped
from torch7.streams import RunStreams
from train import Trainer


def main(argv):
    opt = opts.parse(argv)
    try:
        distributed.launch(run, opt)  # run() here, or once per process with -nGPU N / torchrun
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: say what the -save folder keeps
        raise type(e)('' if opt.testOnly else checkpoints.kept(opt.save)) from None
    except RunStopped as e:
        raise RunStopped(f'{e}; {checkpoints.kept(opt.save)}') from None


def run(opt, process):
    torch.set_num_threads(opt.cpuThreads)  # the Lua's torch.setnumthreads(1): loader workers run beside it
    torch.manual_seed(opt.manualSeed)
    streams = RunStreams(opt) if opt.rng == 'torch7' else None  # main.lua's torch.manualSeed(opt.manualSeed)

    # -resume and -save are checked before anything else, once (checkpoints.claim)
    resumeFile = distributed.decided_by_main(lambda: checkpoints.claim(opt), process)
    # Load previous checkpoint, if it exists
    checkpoint, optimState = checkpoints.latest(opt, process.world_size, resumeFile)
    if checkpoint is None and opt.optimState != 'none':
        optimState = checkpoints.load_optim_state(opt.optimState)

    # Create model
    model, criterion = models.setup(opt, checkpoint, streams and streams.main)
    model = distributed.wrap(model.to(process.device), process)
    if streams and checkpoint:
        streams.load_state_dict(checkpoint.get('rng'), checkpoint['path'])

    # Data loading
    trainLoader, valLoader = DataLoader.create(opt, process.rank, process.world_size, streams)
    with trainLoader, valLoader:  # their worker processes stop when the run ends, also on an error
        models.check_classes(model, len(trainLoader.classList), opt)

        # The trainer handles the training loop and evaluation on validation set
        trainer = Trainer(model, criterion, opt, optimState, process, checkpoint and checkpoint.get('scaler'))

        if opt.testOnly:
            top1, top5 = trainer.test(0, valLoader)
            print(' * Results top1: %6.3f  top5: %6.3f' % (top1, top5))
            return

        startEpoch = checkpoint['epoch'] + 1 if checkpoint else opt.epochNumber
        bestTop1 = checkpoint['bestTop1'] if checkpoint else math.inf
        bestTop5 = checkpoint['bestTop5'] if checkpoint else math.inf
        bestEpoch = checkpoint.get('bestEpoch') if checkpoint else None
        if process.is_main:  # what a run stopped between its writes did not write, from latest.pt
            log = EpochLog(opt.save, checkpoint, startEpoch)
            checkpoints.restore_best(checkpoint, opt.save)
            events = Events(opt.save, trainLoader.size(), startEpoch) if opt.tensorboard else None
            trainer.onIteration = events and events.iteration
        for epoch in range(startEpoch, opt.nEpochs + 1):
            started = time.perf_counter()
            # Train for a single epoch
            trainTop1, trainTop5, trainLoss = trainer.train(epoch, trainLoader)
            trainSeconds = time.perf_counter() - started

            # Run model on validation set
            testTop1, testTop5 = trainer.test(epoch, valLoader)

            bestModel = testTop1 < bestTop1
            if bestModel:
                bestTop1, bestTop5, bestEpoch = testTop1, testTop5, epoch
                print(' * Best model ', '%.14g' % testTop1, '%.14g' % testTop5, sep='\t')

            if process.is_main:
                log.add(epoch=epoch, lr=trainer.learningRate(epoch), train_loss=trainLoss, train_top1=trainTop1,
                        train_top5=trainTop5, test_top1=testTop1, test_top5=testTop5,
                        seconds=round(time.perf_counter() - started, 3),
                        images_per_s=round(trainLoader.numImages() / trainSeconds, 1))
                checkpoints.save(epoch, model, trainer.optimState, bestModel, opt, {
                    'bestTop1': bestTop1, 'bestTop5': bestTop5, 'bestEpoch': bestEpoch, 'history': log.rows,
                    'worldSize': process.world_size, 'scaler': trainer.scalerState,
                    'rng': streams and streams.state_dict()})
                log.write()
                if events:
                    events.epoch(log.rows[-1])

        print(' * Finished top1: %6.3f  top5: %6.3f' % (bestTop1, bestTop5))


if __name__ == '__main__':
    command.run(main, sys.argv[1:], 'main.py')
