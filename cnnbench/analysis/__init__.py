"""Records to findings: tidy frames built once from the records (:mod:`.frames`), the one rule
that decides whether a difference is a change (:mod:`.noise`, on :mod:`cnnbench.stats`), and a
frozen finding per question. A finding holds numbers, intervals, verdicts and the conditions
behind them; it holds no prose and writes no files (``cnnbench.report`` says what it found).
This package imports neither matplotlib nor rich."""
