"""Layer 6, whole-machine recovery: capture the layout, restore it onto a blank disk, drill it.

Modules: parse (the tools' outputs), manifest (the capture format), capture (the `dr capture`
command: layout reads the running machine, gather collects, capturestore writes), plan (pure
restore planning), restore (the `dr restore` command: disks reads a disk as it is, executor
runs the steps, bootsteps the boot ones), digest (tree digests), drill (restore into an
image and verify), state (the drill record `check` reads).
"""
