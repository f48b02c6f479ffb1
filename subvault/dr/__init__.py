"""Layer 6, whole-machine recovery: capture the layout, restore it onto a blank disk, drill it.

Modules: parse (the tools' outputs), manifest (the capture format), capture (gather and
store), plan (pure restore planning), restore (the executor), digest (tree digests),
drill (restore into an image and verify), state (the drill record `check` reads).
"""
