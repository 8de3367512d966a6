"""khaosync: keep Ometria in step with the Khaos Control ERP.

The library core (config, store, khaos, ometria, stages, sandbox) has no CLI imports;
``khaosync.cli`` is a thin Typer layer over it.
"""

__version__ = "0.1.0"
