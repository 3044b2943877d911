"""Reports, from saved records only (a report never measures):

- :mod:`.frames` — tidy pandas frames built once from records: the per-model overview, one frame
  per metric, the failures, the variant lineage and the layer facts of exercises 4-5;
- :mod:`.fmt` — the one number formatter of every table (Markdown, HTML, compare, console);
- :mod:`.noise` — when a change is a change: the interval of a latency ratio over the rounds
  (paired within a run, unpaired across runs; the IQR rule for records without samples), what a
  run resolves, the googlenet_ls/googlenet noise control, memory against the identical pair's
  spread and accuracy over seeds; the rule itself is ``stats.call``;
- :mod:`.exercises` — the chapter's GoogLeNet exercises 1-5, each opened by a generated answer;
- :mod:`.figures` — matplotlib figures (PNG and SVG);
- :mod:`.render` — ``report.md``, ``report.html`` and ``results.csv`` from run folders;
- :mod:`.compare` — two runs side by side, changes outside the noise flagged;
- :mod:`.console` — every rich table and the progress display of the ``cnnbench`` command.
"""
