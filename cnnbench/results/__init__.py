"""Records and the run store: every number cnnbench produces, with the conditions behind it.

- :mod:`.record` — :class:`Spec` (the conditions) and :class:`Record` (status, reason, values);
- :mod:`.types` — one frozen dataclass per metric (``LatencyResult``, ``TrainResult``, ...),
  which ``Record.result`` rebuilds from the saved values;
- :mod:`.store` — the run folder: ``results.jsonl`` appended record by record, ``env.json``.
"""

from .record import SCHEMA_VERSION, STATUSES, Record, Spec, values_of
from .store import CorruptStore, RunStore, load_records, records_frame

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Spec",
    "Record",
    "CorruptStore",
    "RunStore",
    "load_records",
    "records_frame",
    "values_of",
]
