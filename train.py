"""The training loop and learning-rate schedule (port of train.lua), method names kept for side-by-side
reading: train(epoch, loader), test(epoch, loader), computeScore, learningRate, copyInputs.

The loops never wait for the GPU: each iteration's loss and error counts are computed on the device and reach
the host one iteration late (device_figures.OneLate), where the loss is checked, the Lua log line printed and
the epoch's figures summed in the Lua's arithmetic. ``step`` is one whole training step; ``-cudaGraph true`` replays it as a
captured CUDA graph (cuda_graph.GraphedStep).
"""
import math
import sys
import time

import torch
import torch.distributed as dist

import checkpoints
from support import optional
from support.cuda_graph import GraphedStep
from support.device_figures import OneLate
from support.distributed import Process
from support.errors import GunnError

# -precision: the autocast type (None: the model's own type, float32 or float64)
AUTOCAST = {'single': None, 'double': None, 'half': torch.float16, 'bf16': torch.bfloat16}


def _all_sum(figures):
    """A device tensor summed over the processes of a distributed run (in one process: the tensor itself)."""
    if not (dist.is_available() and dist.is_initialized()):
        return figures
    figures = figures.clone()  # the input may be a captured graph's output, or still needed by the caller
    dist.all_reduce(figures)
    return figures


def wrongCounts(output, target, nCrops=1):
    """float64 device tensor [top-1 wrong, top-5 wrong]; with several crops the raw outputs are summed per image."""
    output = output.float()
    if nCrops > 1:
        output = output.view(output.size(0) // nCrops, nCrops, output.size(1)).sum(1)
    k = min(5, output.size(1))
    correct = output.topk(k, 1, True, True).indices.eq(target.view(-1, 1).to(output.device))
    batchSize = output.size(0)
    return torch.stack([batchSize - correct[:, :1].sum(dtype=torch.float64),
                        batchSize - correct.sum(dtype=torch.float64)])


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
        # -precision half: float16 autocast with loss scaling; bf16: bfloat16 autocast (see README)
        self.autocast = AUTOCAST[opt.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=opt.precision == 'half')
        if scalerState:  # a resumed -precision half run goes on with its loss scale ({} from other precisions)
            self.scaler.load_state_dict(scalerState)
        self.progress = self._progress_mode(opt)
        self.runStep = self._graphed_step() if opt.cudaGraph else self.step
        self.lr = None
        self.onIteration = None  # onIteration(epoch, n, loss) after each training iteration (-tensorboard)

    @property
    def optimState(self):
        return self.optimizer.state_dict()

    @property
    def scalerState(self):
        """The loss scaler's state (scale, growth tracker); {} unless -precision half."""
        return self.scaler.state_dict()

    def _graphed_step(self):
        if self.device.type != 'cuda':
            self._log(f'note: -cudaGraph true needs a CUDA device; training on the {self.device.type} without it')
            return self.step
        return GraphedStep(self.step, self.optimizer, self.device)  # one process: distributed.check refuses more

    def _progress_mode(self, opt):
        if opt.progress == 'auto':
            return 'bar' if optional.available('tqdm') and sys.stdout.isatty() and self.rank == 0 else 'lines'
        if opt.progress == 'bar':
            optional.require('tqdm', '-progress bar')
        return opt.progress

    def _log(self, text):
        if self.rank == 0:
            print(text, flush=True)

    def _iterate(self, loader, epoch, desc):
        batches = loader.run(epoch)
        if self.progress == 'bar' and self.rank == 0:
            from tqdm import tqdm
            return tqdm(batches, total=loader.size(), desc=desc, leave=False, dynamic_ncols=True)
        return batches

    def step(self, input, target, weight=1.0):
        """One training step (forward, loss, backward, SGD update) without waiting for the device; returns this
        process's figures of the batch as a float64 device tensor [loss x images, top-1 wrong, top-5 wrong,
        images]. ``weight`` scales the loss that is differentiated (a process's share of a global batch)."""
        with self.autocasting(cache_enabled=False):  # no weight cache: a captured graph must cast every replay
            output = self.model(input)
            loss = self.criterion(output, target)  # autocast runs the loss in float32
        batchSize = output.size(0)
        figures = torch.cat([(loss.detach().double() * batchSize).view(1), wrongCounts(output.detach(), target),
                             self._constant(batchSize)])
        if weight != 1.0:
            loss = loss * weight
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return figures

    def autocasting(self, cache_enabled=True):
        """The autocast context of -precision (disabled for single and double)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.float16, enabled=self.autocast is not None,
                              cache_enabled=cache_enabled)

    def _constant(self, value):
        # made on the device (no host-to-device copy, which a captured graph could not repeat)
        return torch.full((1,), value, dtype=torch.float64, device=self.device)

    def setLearningRate(self, lr):
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        if lr != self.lr and isinstance(self.runStep, GraphedStep):
            self.runStep.release()  # the captured update holds the learning rate as a constant
        self.lr = lr

    def _add(self, sums, ready, show):
        """Adds an iteration whose figures reached the host (one iteration late, device_figures.OneLate) to the
        epoch's sums, in the Lua's arithmetic, and shows it: show(n, seconds, dataTime, loss, top1, top5), the
        loss None in testing."""
        if ready is None:
            return
        (n, seconds, dataTime), (*lossSum, top1Wrong, top5Wrong, count) = ready
        loss = lossSum[0] / count if lossSum else None
        top1, top5 = self.score(top1Wrong, top5Wrong, count)
        for key, value in (('loss', loss), ('top1', top1), ('top5', top5)):
            if value is not None:
                sums[key] += value * count
        sums['N'] += count
        show(n, seconds, dataTime, loss, top1, top5)

    def train(self, epoch, dataloader):
        """Train one epoch; returns (top1, top5, loss) averaged over the epoch's images."""
        lr = self.learningRate(epoch)
        self.setLearningRate(lr)
        trainSize = dataloader.size()
        sums = {'loss': 0.0, 'top1': 0.0, 'top5': 0.0, 'N': 0}  # on the host, summed as the Lua sums them
        late = OneLate(self.device)
        self._log(f'=> Training epoch # {epoch}')
        self.model.train()
        timer = dataTimer = time.perf_counter()
        bar = self._iterate(dataloader, epoch, f'Epoch {epoch}')

        def show(n, seconds, dataTime, loss, top1, top5):
            if not math.isfinite(loss):
                raise GunnError(f'the loss is {loss} at epoch {epoch}, iteration {n}: training diverged; '
                                f'stopping without saving this epoch ({checkpoints.kept(self.opt.save)})')
            if self.onIteration:
                self.onIteration(epoch, n, loss)
            line = 'Err %1.4f  top1 %7.3f  top5 %7.3f' % (loss, top1, top5)
            if self.progress == 'bar' and self.rank == 0:
                bar.set_postfix_str(f'{line}  lr {lr:g}')
            else:
                self._log(' | Epoch: [%d][%d/%d]    Time %.3f  Data %.3f  %s' % (epoch, n, trainSize, seconds,
                                                                              dataTime, line))

        def report(ready):
            self._add(sums, ready, show)

        for n, sample in bar:
            dataTime = time.perf_counter() - dataTimer
            total = sample['batchTotal']
            if total < self.worldSize:  # a last batch too small to give every process an image
                report(late.flush())
                self._log(f' | Epoch: [{epoch}][{n}/{trainSize}]    skipped: {total} image(s) for {self.worldSize} processes')
                continue
            input, target = self.copyInputs(sample)
            # DistributedDataParallel averages the processes' gradients: weighing each by its share of the
            # batch makes the update that of the mean loss over the global batch, as the Lua's criterion over
            # the gathered outputs of all GPUs
            weight = input.size(0) * self.worldSize / total if self.worldSize > 1 else 1.0
            figures = self.runStep(input, target, weight)
            figures = _all_sum(figures)  # the whole global batch's figures (one process: this batch's)
            report(late.push((n, time.perf_counter() - timer, dataTime), figures))
            timer = dataTimer = time.perf_counter()
        report(late.flush())
        N = sums['N']
        return sums['top1'] / N, sums['top5'] / N, sums['loss'] / N

    @torch.no_grad()
    def test(self, epoch, dataloader):
        """Top-1 and top-5 error on the validation set (every image counted once, also when distributed)."""
        size = dataloader.size()
        nCrops = dataloader.nCrops
        sums = {'top1': 0.0, 'top5': 0.0, 'N': 0}  # on the host, summed as the Lua sums them
        late = OneLate(self.device)
        self.model.eval()
        timer = dataTimer = time.perf_counter()
        bar = self._iterate(dataloader, epoch, f'Test {epoch}')

        def show(n, seconds, dataTime, loss, top1, top5):
            if self.progress == 'lines':
                self._log(' | Test: [%d][%d/%d]    Time %.3f  Data %.3f  top1 %7.3f (%7.3f)  top5 %7.3f (%7.3f)' % (
                    epoch, n, size, seconds, dataTime, top1, sums['top1'] / sums['N'], top5,
                    sums['top5'] / sums['N']))

        def report(ready):
            self._add(sums, ready, show)

        for n, sample in bar:
            dataTime = time.perf_counter() - dataTimer
            input, target = self.copyInputs(sample)
            batchSize = target.size(0)
            if batchSize:
                with self.autocasting():
                    output = self.model(input)
                wrong = wrongCounts(output, target, nCrops)
            else:  # a process may have no image of a last batch smaller than the process count
                wrong = torch.zeros(2, dtype=torch.float64, device=self.device)
            figures = _all_sum(torch.cat([wrong, self._constant(batchSize)]))
            report(late.push((n, time.perf_counter() - timer, dataTime), figures))
            timer = dataTimer = time.perf_counter()
        report(late.flush())
        self.model.train()
        top1, top5 = sums['top1'] / sums['N'], sums['top5'] / sums['N']
        self._log(' * Finished epoch # %d     top1: %7.3f  top5: %7.3f\n' % (epoch, top1, top5))
        return top1, top5

    @staticmethod
    def score(top1Wrong, top5Wrong, batchSize):
        """(top-1, top-5) error in percent of a batch from its wrong counts, in the Lua's arithmetic
        (1 - correct / batchSize, times 100), so that epoch figures and best-model ties are the Lua's."""
        return tuple((1.0 - (batchSize - wrong) / batchSize) * 100 for wrong in (top1Wrong, top5Wrong))

    @classmethod
    def computeScore(cls, output, target, nCrops):
        """(top-1, top-5) error in percent (on the host; the loops count on the device, see wrongCounts)."""
        top1Wrong, top5Wrong = wrongCounts(output, target, nCrops).tolist()
        return cls.score(top1Wrong, top5Wrong, output.size(0) // nCrops)

    def copyInputs(self, sample):
        nonBlocking = self.device.type == 'cuda'
        input = sample['input'].to(self.device, self.dtype, non_blocking=nonBlocking)
        return input, sample['target'].to(self.device, non_blocking=nonBlocking)

    def learningRate(self, epoch):
        return learning_rate(self.opt, epoch)


def learning_rate(opt, epoch):
    """GUNN's schedule: CIFAR x0.1 from 50 % and from 75 % of -nEpochs; ImageNet x0.1 every 30 epochs, with
    one extra decade from the fourth step on (decay 3 becomes 4), exactly as the Lua."""
    decay = 0
    if opt.dataset == 'imagenet':
        decay = (epoch - 1) // 30
        if decay >= 3:
            decay += 1
    elif epoch >= 0.75 * opt.nEpochs:  # cifar10, cifar100 (and our digits)
        decay = 2
    elif epoch >= 0.5 * opt.nEpochs:
        decay = 1
    return opt.LR * math.pow(0.1, decay)
