"""Torch7's random number generator (lib/TH/THRandom.c), emulated exactly, for ``-rng torch7``.

Torch7 draws from MT19937: ``torch.manualSeed(s)`` fills the state with the reference ``init_genrand`` of
the low 32 bits of ``s`` and the first draw regenerates it. numpy's ``RandomState`` seeds the same way, so a
numpy MT19937 bit generator given that state yields Torch7's raw 32-bit words; the conversions on top are
written here as THRandom.c has them:

* uniform: ``u = word * 2^-32`` (one word), ``uniform(a, b) = u * (b - a) + a`` in double;
* normal: Box-Muller from two words, ``rho = sqrt(-2 log(1 - y))``, returns ``rho cos(2 pi x)`` and caches
  (x, rho); the next normal request of any kind returns ``rho sin(2 pi x)`` without drawing;
* ``random(a, b) = word % (b - a + 1) + a``; ``randperm(n)``: n-1 swaps with ``word % (n - i)``;
* tensor fills draw one value per element in order; a FloatTensor's arguments are first rounded to float32,
  the formula runs in double and the result is rounded to float32.

The transcendental functions come from Python's ``math`` (the C library, as the C code), never from numpy's
vectorised kernels, which are not correctly rounded the same way on every CPU.
"""
import math
import os

import numpy as np
import torch

_WORD = 2.0 ** -32
_MT_WORDS = 624
_SKIP_CHUNK = 1 << 22
_LONG_MIN, _LONG_LIMIT = -2 ** 63, 2 ** 63


def seed_value(seed):
    """The C long that torch.manualSeed keeps for a Lua number: truncated toward zero; outside the long range
    x86-64's conversion gives LONG_MIN. Lua numbers are doubles, so the seed is rounded to one first."""
    x = float(seed)
    if not _LONG_MIN <= x < _LONG_LIMIT:
        return _LONG_MIN
    return int(x)


def _float32(x):
    """A C double rounded to float (the cwrap argument of a FloatTensor sampler), back as a double."""
    return float(np.float32(x))


class Torch7Generator:
    """One Torch7 generator (the state torch.getRNGState holds), with the samplers the Lua code calls."""

    def __init__(self, seed=None):
        """Seeded as torch.manualSeed(seed); None: from /dev/urandom, as Torch7 seeds a new Lua state (32 bits:
        only the low 32 bits of a seed matter)."""
        self.manual_seed(int.from_bytes(os.urandom(4), 'little') if seed is None else seed)

    def manual_seed(self, seed):
        self.initial_seed = seed_value(seed)
        legacy = np.random.RandomState(self.initial_seed & 0xffffffff)  # the reference init_genrand
        _, key, pos, _, _ = legacy.get_state()
        self._bits = np.random.MT19937()
        self._bits.state = {'bit_generator': 'MT19937', 'state': {'key': key, 'pos': pos}}
        self._normal = None  # the Box-Muller cache: (x, rho) of a pair whose sine is still unused

    # --- raw words and scalar samplers (each one Torch7 call) -------------------------------------------

    def words(self, n):
        """The next n raw words, uint64 array (values < 2^32)."""
        return self._bits.random_raw(n)

    def skip(self, n):
        """Draws n words and forgets them (fills whose values are overwritten)."""
        while n > 0:
            step = min(n, _SKIP_CHUNK)
            self._bits.random_raw(step)
            n -= step

    def random(self, a=None, b=None):
        """torch.random(): the raw word; random(b): 1..b; random(a, b): a..b (plain modulo)."""
        word = int(self._bits.random_raw())
        if a is None:
            return word
        if b is None:
            a, b = 1, a
        return word % (b - a + 1) + a

    def uniform(self, a=0.0, b=1.0):
        return int(self._bits.random_raw()) * _WORD * (b - a) + a

    def bernoulli(self, p=0.5):
        return int(int(self._bits.random_raw()) * _WORD <= p)

    def normal(self, mean=0.0, std=1.0):
        if self._normal is None:
            x = int(self._bits.random_raw()) * _WORD
            y = int(self._bits.random_raw()) * _WORD
            rho = math.sqrt(-2.0 * math.log(1.0 - y))
            self._normal = (x, rho)
            return rho * math.cos(2.0 * math.pi * x) * std + mean
        x, rho = self._normal
        self._normal = None
        return rho * math.sin(2.0 * math.pi * x) * std + mean

    def randperm(self, n):
        """torch.randperm(n) as a 0-based list."""
        perm = list(range(n))
        for i, word in enumerate(self.words(max(n - 1, 0)).tolist()):
            j = i + word % (n - i)
            perm[i], perm[j] = perm[j], perm[i]
        return perm

    # --- tensor fills --------------------------------------------------------------------------------------

    def uniform_fill(self, n, a=0.0, b=1.0, dtype=torch.float64):
        """Tensor(n):uniform(a, b) of that dtype (float32 or float64); the vectorised uniform_fill_reference."""
        if dtype == torch.float32:
            a, b = _float32(a), _float32(b)
        values = self.words(n).astype(np.float64) * _WORD * (b - a) + a
        return torch.from_numpy(values).to(dtype)

    def uniform_fill_reference(self, n, a=0.0, b=1.0, dtype=torch.float64):
        if dtype == torch.float32:
            a, b = _float32(a), _float32(b)
        return torch.tensor([self.uniform(a, b) for _ in range(n)], dtype=torch.float64).to(dtype)

    def normal_fill(self, n, mean=0.0, std=1.0, dtype=torch.float64):
        """Tensor(n):normal(mean, std) of that dtype; the vectorised normal_fill_reference: the pairs' words
        are drawn at once and only log, cos and sin are evaluated element by element (math, as the C)."""
        if dtype == torch.float32:
            mean, std = _float32(mean), _float32(std)
        values = np.empty(n, dtype=np.float64)
        start = 0
        if n and self._normal is not None:
            values[0] = self.normal(mean, std)
            start = 1
        pairs = (n - start + 1) // 2
        w = self.words(2 * pairs).astype(np.float64).reshape(pairs, 2) * _WORD
        angle = (2.0 * math.pi * w[:, 0]).tolist()
        rho = np.sqrt(-2.0 * np.fromiter(map(math.log, (1.0 - w[:, 1]).tolist()), np.float64, pairs))
        cos = np.fromiter(map(math.cos, angle), np.float64, pairs)
        sin = np.fromiter(map(math.sin, angle), np.float64, pairs)
        both = np.stack([rho * cos * std + mean, rho * sin * std + mean], axis=1).reshape(-1)
        values[start:] = both[:n - start]
        if (n - start) % 2:  # an odd count leaves the last pair's sine for the next normal request
            self._normal = (float(w[-1, 0]), float(rho[-1]))
        return torch.from_numpy(values).to(dtype)

    def normal_fill_reference(self, n, mean=0.0, std=1.0, dtype=torch.float64):
        if dtype == torch.float32:
            mean, std = _float32(mean), _float32(std)
        return torch.tensor([self.normal(mean, std) for _ in range(n)], dtype=torch.float64).to(dtype)

    # --- state ---------------------------------------------------------------------------------------------

    def state_dict(self):
        """Plain values (loadable with weights_only=True): the MT words, the position in them, the cache."""
        state = self._bits.state['state']
        return {'initial_seed': self.initial_seed, 'key': torch.from_numpy(state['key'].astype(np.int64)),
                'pos': int(state['pos']), 'normal': None if self._normal is None else list(self._normal)}

    def load_state_dict(self, state):
        self.initial_seed = state['initial_seed']
        key = np.asarray(state['key'], dtype=np.int64)
        if key.shape != (_MT_WORDS,) or int(state['pos']) not in range(_MT_WORDS + 1):
            raise ValueError('not a Torch7 generator state')
        self._bits.state = {'bit_generator': 'MT19937',
                            'state': {'key': key.astype(np.uint32), 'pos': int(state['pos'])}}
        self._normal = None if state['normal'] is None else tuple(float(v) for v in state['normal'])

    @classmethod
    def from_state(cls, state):
        generator = cls(0)
        generator.load_state_dict(state)
        return generator


def read_torch7_state(raw):
    """A state_dict from the bytes of torch.getRNGState() (the C struct THGenerator of x86-64, 5048 bytes)."""
    raw = bytes(np.asarray(raw, dtype=np.uint8))
    if len(raw) != 5048:
        raise ValueError(f'a Torch7 generator state has 5048 bytes, not {len(raw)}')

    def field(dtype, offset, count=1):
        return np.frombuffer(raw, dtype, count, offset)

    seed, left, next_word = int(field('<i8', 0)[0]), int(field('<i4', 8)[0]), int(field('<u8', 16)[0])
    key = field('<u8', 24, _MT_WORDS).astype(np.int64)
    x, _y, rho = field('<f8', 5016, 3).tolist()
    valid = int(field('<i4', 5040)[0])
    # Torch7 regenerates when `left` drops to 0 on a draw; numpy when its position reaches 624.
    pos = _MT_WORDS if left == 1 else next_word
    return {'initial_seed': seed, 'key': torch.from_numpy(key), 'pos': pos, 'normal': [x, rho] if valid else None}


class Torch7Draws:
    """The transforms' draw source (datasets/transforms.py, TorchDraws' methods) on a Torch7 generator, as
    the transforms draw in a loader thread of the Lua (whose default tensor type is DoubleTensor)."""

    def __init__(self, generator):
        self.generator = generator

    def uniform(self, a=0.0, b=1.0):
        return self.generator.uniform(a, b)

    def random(self, a, b):
        return self.generator.random(a, b)

    def randperm(self, n):
        return self.generator.randperm(n)

    def normal(self, n, mean, std):
        return self.generator.normal_fill(n, mean, std, torch.float64)
