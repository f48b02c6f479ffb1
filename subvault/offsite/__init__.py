"""Layer 4, offsite: age-encrypted, zstd-compressed send streams in object storage.

- `layout`   where every object lives under a target's prefix
- `manifest` the authenticated record of one uploaded snapshot (written last)
- `plan`     pure: what to upload next, what may be deleted, what must be held locally
- `upload`   the resumable executor: source | zstd -> parts, each its own age file
- `restore`  verify everything, then age -d | zstd -d | sink, chain from the full
"""
