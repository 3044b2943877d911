"""Records and the run store: every number cnnbench produces, with the conditions behind it.

- :mod:`.record` — :class:`Spec` (the conditions) and :class:`Record` (status, reason, values);
- :mod:`.types` — one frozen dataclass per metric (``LatencyResult``, ``TrainResult``, ...),
  which ``Record.result`` rebuilds from the saved values;
- :mod:`.store` — the run folder: ``results.jsonl`` appended record by record, ``env.json``,
  the lock that keeps a second run out, and the typed errors a full disk or a damaged file raise;
- :mod:`.resume` — which settings of a resumed run would change a measurement;
- :mod:`.history` — the SQLite history of runs.
"""

from .record import SCHEMA_VERSION, STATUSES, Record, Spec, values_of
from .store import (
    CorruptEnv,
    CorruptStore,
    RunLocked,
    RunStore,
    StoreError,
    StoreFull,
    load_records,
    records_frame,
)

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Spec",
    "Record",
    "CorruptEnv",
    "CorruptStore",
    "RunLocked",
    "RunStore",
    "StoreError",
    "StoreFull",
    "load_records",
    "records_frame",
    "values_of",
]
