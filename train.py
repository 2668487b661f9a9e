"""The training loop and learning-rate schedule (port of train.lua), method names kept for side-by-side
reading: train(epoch, loader), test(epoch, loader), computeScore, learningRate, copyInputs."""
import math
import sys
import time

import torch
import torch.distributed as dist

import checkpoints
from distributed import Process
from errors import GunnError

try:
    from tqdm import tqdm
except ImportError:  # the Lua log lines need no extra package
    tqdm = None


def _all_sum(values, device):
    """Sum a list of numbers over the processes of a distributed run (a no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class Trainer:
    def __init__(self, model, criterion, opt, optimState=None, process=None, scalerState=None):
        self.model, self.criterion, self.opt = model, criterion, opt
        process = process or Process()
        self.device = torch.device(process.device)
        self.rank, self.worldSize = process.rank, process.world_size
        self.dtype = torch.float64 if opt.precision == 'double' else torch.float32
        # optim.sgd of train.lua: Nesterov momentum, dampening 0, weight decay on every parameter
        self.optimizer = torch.optim.SGD(model.parameters(), lr=opt.LR, momentum=opt.momentum, dampening=0.0,
                                         nesterov=True, weight_decay=opt.weightDecay)
        if optimState is not None:
            try:
                self.optimizer.load_state_dict(optimState)
            except (ValueError, KeyError) as e:
                raise GunnError(f'optimizer state does not match the model: {e}') from None
        # -precision half: float16 autocast with loss scaling (see README)
        self.half = opt.precision == 'half'
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.half)
        if scalerState:  # a resumed -precision half run goes on with its loss scale ({} from other precisions)
            self.scaler.load_state_dict(scalerState)
        self.progress = self._progress_mode(opt)

    @property
    def optimState(self):
        return self.optimizer.state_dict()

    @property
    def scalerState(self):
        """The loss scaler's state (scale, growth tracker); {} unless -precision half."""
        return self.scaler.state_dict()

    def _progress_mode(self, opt):
        if opt.progress == 'auto':
            return 'bar' if tqdm is not None and sys.stdout.isatty() and self.rank == 0 else 'lines'
        return opt.progress

    def _log(self, text):
        if self.rank == 0:
            print(text, flush=True)

    def _iterate(self, loader, epoch, desc):
        batches = loader.run(epoch)
        if self.progress == 'bar' and self.rank == 0:
            return tqdm(batches, total=loader.size(), desc=desc, leave=False, dynamic_ncols=True)
        return batches

    def train(self, epoch, dataloader):
        """Train one epoch; returns (top1, top5, loss) averaged over the epoch's images."""
        lr = self.learningRate(epoch)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        trainSize = dataloader.size()
        top1Sum = top5Sum = lossSum = 0.0
        N = 0
        self._log(f'=> Training epoch # {epoch}')
        self.model.train()
        timer = dataTimer = time.perf_counter()
        bar = self._iterate(dataloader, epoch, f'Epoch {epoch}')
        for n, sample in bar:
            dataTime = time.perf_counter() - dataTimer
            total = sample['batchTotal']
            if total < self.worldSize:  # a last batch too small to give every process an image
                self._log(f' | Epoch: [{epoch}][{n}/{trainSize}]    skipped: {total} image(s) for {self.worldSize} processes')
                continue
            input, target = self.copyInputs(sample)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
                output = self.model(input)
                loss = self.criterion(output, target)  # autocast runs the loss in float32
            batchSize = output.size(0)
            top1, top5 = self.computeScore(output.detach(), target, 1)
            # the whole global batch's figures (one process: this batch's)
            lossBatch, top1Batch, top5Batch, count = _all_sum(
                [loss.item() * batchSize, top1 * batchSize, top5 * batchSize, batchSize], self.device)
            if not math.isfinite(lossBatch):
                raise GunnError(f'the loss is {lossBatch / count} at epoch {epoch}, iteration {n}: training diverged; '
                                f'stopping without saving this epoch ({checkpoints.kept(self.opt.save)})')
            if self.worldSize > 1:
                # DistributedDataParallel averages the processes' gradients: weighing each by its share of
                # the batch makes the update that of the mean loss over the global batch, as the Lua's
                # criterion over the gathered outputs of all GPUs
                loss = loss * (batchSize * self.worldSize / total)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

            lossSum += lossBatch
            top1Sum += top1Batch
            top5Sum += top5Batch
            N += count
            line = 'Err %1.4f  top1 %7.3f  top5 %7.3f' % (lossBatch / count, top1Batch / count, top5Batch / count)
            if self.progress == 'bar' and self.rank == 0:
                bar.set_postfix_str(f'{line}  lr {lr:g}')
            else:
                self._log(' | Epoch: [%d][%d/%d]    Time %.3f  Data %.3f  %s' % (
                    epoch, n, trainSize, time.perf_counter() - timer, dataTime, line))
            timer = dataTimer = time.perf_counter()
        return top1Sum / N, top5Sum / N, lossSum / N

    @torch.no_grad()
    def test(self, epoch, dataloader):
        """Top-1 and top-5 error on the validation set (every image counted once, also when distributed)."""
        size = dataloader.size()
        nCrops = dataloader.nCrops
        top1Sum = top5Sum = 0.0
        N = 0
        self.model.eval()
        timer = dataTimer = time.perf_counter()
        bar = self._iterate(dataloader, epoch, f'Test {epoch}')
        for n, sample in bar:
            dataTime = time.perf_counter() - dataTimer
            input, target = self.copyInputs(sample)
            batchSize = target.size(0)
            top1 = top5 = 0.0
            if batchSize:  # a process may have no image of a last batch smaller than the process count
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
                    output = self.model(input)
                top1, top5 = self.computeScore(output, target, nCrops)
            top1Batch, top5Batch, count = _all_sum([top1 * batchSize, top5 * batchSize, batchSize], self.device)
            top1Sum += top1Batch
            top5Sum += top5Batch
            N += count
            if self.progress == 'lines':
                self._log(' | Test: [%d][%d/%d]    Time %.3f  Data %.3f  top1 %7.3f (%7.3f)  top5 %7.3f (%7.3f)' % (
                    epoch, n, size, time.perf_counter() - timer, dataTime, top1Batch / count, top1Sum / N,
                    top5Batch / count, top5Sum / N))
            timer = dataTimer = time.perf_counter()
        self.model.train()
        self._log(' * Finished epoch # %d     top1: %7.3f  top5: %7.3f\n' % (epoch, top1Sum / N, top5Sum / N))
        return top1Sum / N, top5Sum / N

    @staticmethod
    def computeScore(output, target, nCrops):
        """(top-1, top-5) error in percent; with several crops the raw outputs are summed per image."""
        output = output.float()
        if nCrops > 1:
            output = output.view(output.size(0) // nCrops, nCrops, output.size(1)).sum(1)
        batchSize = output.size(0)
        k = min(5, output.size(1))
        predictions = output.topk(k, 1, True, True).indices
        correct = predictions.eq(target.view(batchSize, 1).to(predictions.device))
        top1 = 1.0 - correct[:, :1].sum().item() / batchSize
        top5 = 1.0 - correct[:, :k].sum().item() / batchSize
        return top1 * 100, top5 * 100

    def copyInputs(self, sample):
        nonBlocking = self.device.type == 'cuda'
        input = sample['input'].to(self.device, self.dtype, non_blocking=nonBlocking)
        return input, sample['target'].to(self.device, non_blocking=nonBlocking)

    def learningRate(self, epoch):
        """GUNN's schedule: CIFAR x0.1 from 50 % and from 75 % of -nEpochs; ImageNet x0.1 every 30 epochs,
        with one extra decade from the fourth step on (decay 3 becomes 4), exactly as the Lua."""
        decay = 0
        if self.opt.dataset == 'imagenet':
            decay = (epoch - 1) // 30
            if decay >= 3:
                decay += 1
        elif epoch >= 0.75 * self.opt.nEpochs:  # cifar10, cifar100 (and our digits)
            decay = 2
        elif epoch >= 0.5 * self.opt.nEpochs:
            decay = 1
        return self.opt.LR * math.pow(0.1, decay)
