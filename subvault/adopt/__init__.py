"""`subvault adopt`: take over an existing snapper + btrbk installation.

Pure parts: `snapper_conf` and `btrbk_conf` (parsers), `plan` (what to write and do).
I/O parts: `discover` (read the installation), `apply` (the hand-over, with `flip`).
`check` fails while snapper would prune the same snapshots: subvault/run/neighbours.py.
"""
