"""`subvault adopt`: take over an existing snapper + btrbk installation.

Pure parts: `snapper_conf` and `btrbk_conf` (parsers); `found` (what discovery saw) and
`planned` (what the plan says); `plan` (matching and naming the subvolumes, with `names`),
`handover`, `targets` (with `connection`), `moves`, `keeps` and `render` (the TOML).
I/O parts: `discover` (read the installation), `apply` (the hand-over, with `flip`).
`check` fails while snapper would prune the same snapshots: subvault/run/neighbours.py.
"""
