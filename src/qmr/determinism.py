"""Fixed seeds and thread counts, so the same params give the same metrics."""

from __future__ import annotations

import os
import random


def set_determinism(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
