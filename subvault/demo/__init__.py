"""Test and demo scaffolding: throwaway machines on loop devices, never used by a backup.

- `testbed`      loop-file btrfs filesystems in the homelab layout, and its config
- `testbed_ssh`  a real sshd on 127.0.0.1 (the Pi), and hung or refusing listeners
- `machine`      a whole machine image (partitions, ESP, btrfs) for the dr tests and drills
- `tinyos`       a tiny bootable Linux for that machine, so a drill can boot it
- `run`          `subvault demo`: every layer on the homelab testbed

The tests, the bench and `subvault demo` share these; the backup layers never import them.
"""
