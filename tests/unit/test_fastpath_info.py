"""libbtrfsutil's subvolume info: the one-unpack reader gives what the field-by-field one gives."""

import pytest

from subvault.btrfs import fastpath, libbtrfsutil


@pytest.mark.parametrize("otime,received", [(1_764_000_000, True), (0, False)])
def test_fast_info_equals_field_by_field(otime, received):
    info = libbtrfsutil.SubvolumeInfo()
    info.id, info.parent_id, info.dir_id, info.flags = 300, 257, 256, libbtrfsutil.SUBVOL_RDONLY_FLAG
    for i in range(16):
        info.uuid[i] = i + 1
        info.parent_uuid[i] = 0xF0 - i
        info.received_uuid[i] = (i * 7) if received else 0
    info.generation, info.ctransid = 99, 98
    info.otime.tv_sec, info.otime.tv_nsec = otime, 5
    info.ctime.tv_sec = 123
    assert fastpath._fast_info(info, "a/b") == fastpath._info(info, "a/b")
