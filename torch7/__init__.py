"""Torch7 itself, as far as the port needs it: its random generator (-rng torch7), the random streams of a
main.lua run, and reading the original's .t7 files."""
