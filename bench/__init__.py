"""Benchmarks behind ``python bench/run.py``: figures written to ``bench/results/`` (JSON + markdown), never tests.

Not part of the installed library (as diffusers keeps its benchmarks outside the package): these modules use only
the public API of ``saferclip_diffusers`` and run from a checkout.

One module per family, each returning a :class:`~.report.Section` with its tables and targets:

- :mod:`.generation`  per-image time of the Safer pipeline, compare mode, SLD and a negative prompt vs plain diffusers
- :mod:`.memory`      peak memory of compare mode vs two loaded pipelines vs one, each in a fresh process
- :mod:`.training`    step time with cached frozen embeddings vs recomputing them; proximity-mining cost vs size
- :mod:`.scoring`     NudeNet throughput; the share of an I2P run's wall time that scoring costs

Shared pieces: :mod:`.models` (real-size SD 1.5 / SDXL / CLIP architectures with random weights, built offline from
the public configs), :mod:`.timing` (alternating measurement and paired ratios), :mod:`.environment` (machine,
device, versions), :mod:`.report` (writing), :mod:`.suite` (running families), :mod:`.rss` (a process's resident
memory) and :mod:`.child` (a module run in a fresh process). Generation and memory keep their systems / report in
``generation_systems.py``, ``generation_report.py`` and ``memory_report.py``.
"""
