"""Per-epoch results in -save: a CSV table and a PNG of the training curves, both rewritten every epoch from
the run's history (the rows of its finished epochs), which latest.pt keeps too (checkpoints.py): a run
stopped before its log was written gets the missing rows back when it is resumed."""
import csv
import os
import sys

from support import fileio, optional

CSV, PNG = 'log.csv', 'curves.png'
FIELDS = ('epoch', 'lr', 'train_loss', 'train_top1', 'train_top5', 'test_top1', 'test_top5', 'seconds',
          'images_per_s')


class Events:
    """The -tensorboard event file in -save: the columns of log.csv per epoch (tags 'epoch/<column>') and the
    training loss per iteration ('train/loss'), on one step axis, the iterations."""

    def __init__(self, folder, iterations_per_epoch, start_epoch):
        optional.require('tensorboard', '-tensorboard true')
        from torch.utils.tensorboard import SummaryWriter
        self.per_epoch = iterations_per_epoch
        # a resumed run hides what the stopped run logged after its last saved epoch
        self.writer = SummaryWriter(folder, purge_step=(start_epoch - 1) * iterations_per_epoch + 1)

    def iteration(self, epoch, n, loss):
        self.writer.add_scalar('train/loss', loss, (epoch - 1) * self.per_epoch + n)

    def epoch(self, row):
        for name in FIELDS[1:]:
            self.writer.add_scalar(f'epoch/{name}', float(row[name]), int(row['epoch']) * self.per_epoch)
        self.writer.flush()


class EpochLog:
    def __init__(self, save_dir, checkpoint, start_epoch):
        """The log of a run starting at start_epoch, from the checkpoint it resumes (None: a new run); written
        at once when resumed, so that a row lost by a run stopped before writing it is back."""
        self.csv_path = os.path.join(save_dir, CSV)
        self.png_path = os.path.join(save_dir, PNG)
        self.rows, self.warned = [], False
        if checkpoint is not None and 'history' in checkpoint:
            self.rows = [row for row in checkpoint['history'] if row['epoch'] < start_epoch]
        elif os.path.isfile(self.csv_path):  # a checkpoint of an older version: the epochs the log has
            with open(self.csv_path, newline='') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) < start_epoch]
        if checkpoint is not None:
            self.write()

    def add(self, **row):
        self.rows.append({k: row[k] for k in FIELDS})

    def write(self):
        with fileio.replacing(self.csv_path) as tmp, open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        self.plot()

    def plot(self):
        if not optional.available('matplotlib'):
            if not self.warned:
                print(f'warning: {self.png_path} is not drawn: it needs the matplotlib package: pip install matplotlib',
                      file=sys.stderr)
                self.warned = True
            return
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        col = {k: [float(r[k]) for r in self.rows] for k in FIELDS}
        fig, (err, loss) = plt.subplots(1, 2, figsize=(11, 4))
        err.plot(col['epoch'], col['train_top1'], label='training top-1')
        err.plot(col['epoch'], col['test_top1'], label='validation top-1')
        err.plot(col['epoch'], col['test_top5'], label='validation top-5', linestyle='--')
        err.set(xlabel='epoch', ylabel='error (%)', title='Error')
        err.legend()
        loss.plot(col['epoch'], col['train_loss'])
        loss.set(xlabel='epoch', ylabel='cross-entropy', title='Training loss', yscale='log')
        for ax in (err, loss):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        try:
            with fileio.replacing(self.png_path) as tmp:
                fig.savefig(tmp, format='png', dpi=90)
        finally:
            plt.close(fig)
