"""The port's own plumbing, with no counterpart in the Lua code: one-line errors, atomic file writes and safe
loading, one process per GPU, CUDA graphs, device-side figures and the per-epoch log. Nothing here imports
the root modules (main, opts, train, checkpoints, dataloader), so the Lua map can change without it."""
