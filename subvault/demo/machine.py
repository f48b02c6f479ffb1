"""A tiny whole machine in a disk image, for the drill tests, the bench and `subvault demo`.

The image has a GPT with an ESP (vfat, with a bootloader file) and a btrfs partition in
the homelab layout (subvault.demo.testbed), an fstab naming both by UUID, an xattr, a
non-root owner and the default subvolume set to root. Partitions are attached as loop devices by offset (never `losetup -P`);
the ESP is written through mtools, so no vfat support is needed in the kernel.
`close()` undoes every loop device and mount, pass or fail; it never raises.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.config.load import parse_config
from subvault.context import Context
from subvault.demo import tinyos
from subvault.demo.testbed import LoopFs, build_homelab, homelab_config
from subvault.dr import fat, qemu
from subvault.dr.capture import capture
from subvault.dr.captureopts import CaptureSpec
from subvault.dr.drill import DrillRequest, drill
from subvault.dr.parse import GPT_BIOS_BOOT, PartitionTable, parse_blkid_export, parse_sfdisk_dump
from subvault.dr.report import DrillReport
from subvault.dr.workspace import Workspace
from subvault.errors import SubvaultError
from subvault.results import Outcome
from subvault.run.local import take_timeline
from subvault.run.replicate import replicate

NO_CACHE = {"BLKID_FILE": "/dev/null"}
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69E4F7C709"
EFI_FILE = "EFI/fedora/grubx64.efi"


def table_script(esp_mib: int = 64, *, bios_boot_of_mib: int = 0) -> str:
    """The machine's GPT; bios_boot_of_mib (the disk's size): root leaves room for a 1 MiB BIOS boot partition at the end."""
    if not bios_boot_of_mib:
        return f'label: gpt\nunit: sectors\n\nsize={esp_mib}MiB, type={ESP_TYPE}, name="EFI System"\ntype={LINUX_TYPE}, name="root"\n'
    root_mib = bios_boot_of_mib - esp_mib - 4  # 1 MiB before the first partition, 1 for BIOS boot, room for the backup GPT
    return (f'label: gpt\nunit: sectors\n\nsize={esp_mib}MiB, type={ESP_TYPE}, name="EFI System"\n'
            f'size={root_mib}MiB, type={LINUX_TYPE}, name="root"\nsize=1MiB, type={GPT_BIOS_BOOT}, name="BIOS boot"\n')


class Machine:
    """The machine under test: its disk image, its partitions attached by offset, its mounts.

    After build(): .table, .esp (the ESP's loop device), .top (btrfs top level mounted),
    .paths (homelab subvolumes), .esp_uuid, .fs_uuid, .fstab (path of root's fstab).
    """

    def __init__(self, tmp: Path, *, size_mib: int = 1536, data_mib: int = 1, bootable: bool = False, firmware_boot: bool = False,
                 bios_boot: bool = False) -> None:
        self.tmp = tmp
        self.firmware_boot = firmware_boot  # also a GRUB at the ESP's removable path (EFI/BOOT/BOOTX64.EFI), for OVMF
        self.bios_boot = bios_boot  # a BIOS machine: GRUB in the MBR and a BIOS boot partition, modules in root's /boot/grub
        self.firmware = "bios" if bios_boot else "uefi"
        self.bootable = bootable  # a kernel, initramfs and init in root (tinyos), a BLS entry
        self.image = tmp / "machine.img"
        self.size_mib = size_mib
        self.data_mib = data_mib
        self.ws = Workspace(tmp / "machine")
        self.table: PartitionTable | None = None

    def build(self) -> Machine:
        with open(self.image, "wb") as fh:
            fh.truncate(self.size_mib << 20)
        process.run(["sfdisk", "-q", str(self.image)], input=table_script(bios_boot_of_mib=self.size_mib if self.bios_boot else 0))
        self.table = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(self.image)]).stdout)
        esp, root = self.partitions()[:2]
        process.run(["mkfs.vfat", "-F", "32", "-n", "ESP", esp], env=NO_CACHE)
        process.run(["mkfs.btrfs", "-q", "-f", "-L", "fedora", root], env=NO_CACHE)
        self.esp = esp
        self.top = self.ws.mount(root, "top", "btrfs", "subvolid=5")
        self.paths = build_homelab(self.top, data_mib=self.data_mib)
        adapter.set_default(adapter.show(self.paths["root"]).id, self.top)  # as openSUSE does; the restore must carry it
        with tempfile.TemporaryDirectory(prefix="subvault-esp-") as staging:
            (Path(staging) / EFI_FILE).parent.mkdir(parents=True)
            (Path(staging) / EFI_FILE).write_bytes(os.urandom(4096))
            fs_uuid = self.uuid(root)
            if self.bootable or self.firmware_boot or self.bios_boot:
                tinyos.install(self.paths["root"], fs_uuid)
                if self.bios_boot:
                    tinyos.grub_bios(self.image, self.table.partitions[2].start, fs_uuid, self.paths["root"])
                if self.firmware_boot:
                    (Path(staging) / "EFI" / "BOOT").mkdir(parents=True)
                    tinyos.grub_efi(Path(staging) / "EFI" / "BOOT" / "BOOTX64.EFI", fs_uuid)
            fat.copy_in(Path(staging), esp)
        self.esp_uuid, self.fs_uuid = self.uuid(esp), self.uuid(root)
        self.fstab = self.paths["root"] / "etc" / "fstab"
        self.fstab.write_text(
            f"UUID={self.fs_uuid} / btrfs subvol=root 0 0\n"
            f"UUID={self.esp_uuid} /boot/efi vfat umask=0077 0 2\n"
            f"UUID={self.fs_uuid} /var btrfs subvol=var 0 0\n"
            f"UUID={self.fs_uuid} /var/lib/pvc btrfs subvol=var_lib_pvc 0 0\n"
            f"UUID={self.fs_uuid} /var/cache btrfs subvol=var_cache 0 0\n"
        )
        os.setxattr(self.paths["var_lib_pvc"] / "nextcloud" / "config.php", "user.owner", b"nextcloud")
        os.chown(self.paths["home"] / "user" / "notes.txt", 1000, 1000)
        return self

    @property
    def capture_dir(self) -> Path:
        """Where the capture goes: inside the var subvolume, so it is replicated with it."""
        return self.paths["var"] / "lib" / "subvault" / "dr"

    def capture_args(self, dest: Path | None = None) -> list[str]:
        """The `dr capture` arguments for this machine (its image, its fstab, its ESP device)."""
        return ["--dest", str(dest or self.capture_dir), "--disk", str(self.image), "--fstab", str(self.fstab),
                "--boot-dir", f"/boot/efi={self.esp}", "--firmware", self.firmware]

    def partitions(self) -> list[str]:
        assert self.table is not None
        ss = self.table.sector_size
        return [self.ws.attach(str(self.image), p.start * ss, p.size * ss) for p in self.table.partitions]

    @staticmethod
    def uuid(dev: str) -> str:
        return parse_blkid_export(process.run(["blkid", "-p", "-o", "export", dev], env=NO_CACHE).stdout)[0].uuid or ""

    def probe(self, number: int) -> dict[str, str]:
        """blkid's fields of partition number, probed through the image at its offset."""
        assert self.table is not None
        p = self.table.partition(number)
        ss = self.table.sector_size
        out = process.run(["blkid", "-p", "-o", "export", "-O", str(p.start * ss), "-S", str(p.size * ss), str(self.image)], env=NO_CACHE).stdout
        return parse_blkid_export(out)[0].fields

    def wipe(self) -> None:
        """Detach everything and zero the image (same size, sparse)."""
        self.ws.close()
        size = self.image.stat().st_size
        with open(self.image, "wb") as fh:
            fh.truncate(size)

    def close(self) -> None:
        self.ws.close()


def machine_config(m: Machine, target_dir: Path, state_dir: Path) -> str:
    """A config protecting m's homelab subvolumes, replicated to a local btrfs target "pi" at target_dir."""
    text = homelab_config(m.paths, state_dir=state_dir).replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["pi"]')
    return text + f'\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{target_dir}"\nkeep = "all"\n'


def demo_drill(workdir: Path, say: Callable[[str], None] = print, *, boot: bool | None = None) -> DrillReport:
    """Build a tiny machine image and a target under workdir, snapshot, capture, replicate, drill it.

    boot: make the machine bootable (tinyos) and boot it in the drill; None: when QEMU is installed.

    Return the DrillReport (its .ok, .rto_seconds, .rpo_seconds). Everything made under
    workdir (loop devices, mounts) is undone before returning, pass or fail. Needs root,
    loop devices, btrfs-progs, dosfstools, mtools.
    """
    if boot is None:
        boot = qemu.qemu_path() is not None and _kernel_ready(say)
    workdir.mkdir(parents=True, exist_ok=True)
    m = Machine(workdir, size_mib=768, bootable=boot)
    pi = LoopFs(image=workdir / "pi.img", mountpoint=workdir / "pi", size="1G")
    try:
        say("drill demo: building a machine image (GPT, ESP, btrfs in the homelab layout" + (", a bootable tiny Linux in root)" if boot else ")"))
        m.build()
        pi.create()
        config = parse_config(machine_config(m, pi.mountpoint, workdir / "state"))
        ctx = Context(config)
        ctx.now -= timedelta(seconds=2)  # the first snapshot a little in the past, so the second gets its own name
        take_timeline(ctx, force=True)
        spec = CaptureSpec(dest=m.capture_dir, disks=[str(m.image)], fstab=str(m.fstab), boot_dirs={"/boot/efi": m.esp}, firmware="uefi")
        _ok(capture(ctx, spec), "dr capture")
        later = Context(config)
        _ok(take_timeline(later, force=True), "snapshot")
        _ok(replicate(later, meter=False), "replicate")
        say("drill demo: restoring from the target into a scratch image and verifying it")
        # The capture as it travelled to the target inside var's newest replica (no [dr] table names capture_dir here).
        var_entry = max(pi.mountpoint.glob("*/var/var.*"), key=lambda p: p.name)
        travelled = var_entry / m.capture_dir.relative_to(m.paths["var"])
        if boot:
            say("drill demo: then booting the restored disk in QEMU (no network but a 127.0.0.1 forward for the port probe)")
        req = DrillRequest("pi", capture=str(travelled), workdir=str(workdir / "drill"), boot=boot,
                           boot_ports=(tinyos.PORT,) if boot else (), boot_command="cat /etc/hostname" if boot else None, boot_expect="vps1" if boot else None)
        return drill(Context(config, say=say), req)
    finally:
        m.close()
        pi.close()


def _kernel_ready(say: Callable[[str], None]) -> bool:
    """Whether the tiny machine's kernel is cached or can be fetched (apt); say why not."""
    try:
        tinyos.kernel_tree()
    except SubvaultError as exc:
        say(f"drill demo: the drill will not boot the machine: {exc}")
        return False
    return True


def _ok(outcome: Outcome, what: str) -> None:
    if outcome.errors:
        raise SubvaultError(f"drill demo: {what} failed: {'; '.join(outcome.errors)}")
