"""`tuneforge fit --nproc N`: the same command again in N processes on this machine, started the way
`torchrun --standalone --nproc-per-node N -m tuneforge ...` starts them (torch's elastic launcher,
a rendezvous on a free local port). Each process sees RANK and WORLD_SIZE and trains its shard
(distributed.py). A module of its own, imported by cli.py only for --nproc: the launcher's
imports would slow every run's start."""
from __future__ import annotations

import os
import sys
import uuid

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch


def relaunch(nproc: int, argv: list[str]) -> int:
    """`python -m tuneforge *argv` in `nproc` processes; their exit status. The launcher is called
    directly, not through torchrun's command line, whose parser would take tuneforge flags that
    begin one of its own (--nproc, --monitor) for its own."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # as torchrun does
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "tuneforge", *argv)
    except ChildFailedError as e:  # each process said its own error; the launcher's summary adds nothing
        return max((f.exitcode for f in e.failures.values()), default=1) or 1
    return 0
