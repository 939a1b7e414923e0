"""Shared test setup."""

import torch

# One intra-op thread: tests are small, and on a 2-core machine shared with data-loader workers
# (or anything else) OpenMP's spinning threads make them several times slower, not faster.
torch.set_num_threads(1)
