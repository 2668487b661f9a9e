"""Per-epoch results in -save: a CSV table and a PNG of the training curves, both rewritten every epoch."""
import csv
import os

from support import fileio

CSV, PNG = 'log.csv', 'curves.png'
FIELDS = ('epoch', 'lr', 'train_loss', 'train_top1', 'train_top5', 'test_top1', 'test_top5', 'seconds',
          'images_per_s')


class EpochLog:
    def __init__(self, save_dir, start_epoch):
        self.csv_path = os.path.join(save_dir, CSV)
        self.png_path = os.path.join(save_dir, PNG)
        self.rows = []
        if os.path.isfile(self.csv_path):  # a resumed run keeps the epochs before the one it restarts at
            with open(self.csv_path, newline='') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) < start_epoch]

    def add(self, **row):
        self.rows.append({k: row[k] for k in FIELDS})
        with fileio.replacing(self.csv_path) as tmp, open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        self.plot()

    def plot(self):
        try:
            import matplotlib
            matplotlib.use('Agg')
            import matplotlib.pyplot as plt
        except ImportError:
            return
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
