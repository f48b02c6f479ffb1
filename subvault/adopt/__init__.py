"""`subvault adopt`: take over an existing snapper + btrbk installation.

Pure parts: `snapper_conf` and `btrbk_conf` (parsers), `plan` (what to write and do).
I/O parts: `discover` (read the installation), `apply` (the hand-over), `overlap`
(the `check` that fails while two tools would prune the same snapshots).
"""
