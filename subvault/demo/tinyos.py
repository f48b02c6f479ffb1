"""A tiny bootable Linux for the machine image of the tests, the bench and `subvault demo`.

Parts:
- Debian's cloud kernel package, fetched with `apt-get download` and unpacked with
  `dpkg-deb -x` into a cache directory (SUBVAULT_KERNEL_CACHE, default
  /var/cache/subvault/tiny-kernel), so repeated runs do not download it again;
- an initramfs built here (newc cpio, by Python): busybox-static, the kernel's virtio,
  btrfs and vfat modules with their dependencies (read from each module's modinfo, so no
  depmod is needed). Its init mounts root by `root=UUID=` and `rootflags=subvol=` and
  switch_roots; when it cannot, it prints initramfs-tools' "Dropping to a shell!" and
  runs a shell, as Debian's does;
- the root's /sbin/init: mounts every fstab entry (systemd's "Failed to mount" and
  emergency mode when one fails), prints systemd's "Reached target Multi-User System",
  starts a web server on port 8080 and runs a shell on the console (the drill's command
  probe talks to it, then powers the machine off).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
from pathlib import Path

from subvault import process
from subvault.errors import SubvaultError

KERNEL_META = "linux-image-cloud-amd64"
PORT = 8080
# Loaded in this order; each one's dependencies first. "btrfs" can be left out (a test's broken initramfs).
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "btrfs", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859-1")

INITRAMFS_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
root=; flags=
for a in $(cat /proc/cmdline); do
  case "$a" in root=*) root="${a#root=}";; rootflags=*) flags="${a#rootflags=}";; esac
done
echo "tiny initramfs: root=$root rootflags=$flags"
dev=
for i in $(seq 50); do dev=$(findfs "$root" 2>/dev/null) && break; usleep 100000; done
panic() { echo "$1"; echo "ALERT! $root could not be mounted. Dropping to a shell!"; export PS1='(initramfs) '; exec sh; }
[ -n "$dev" ] || panic "Gave up waiting for root file system device $root"
mkdir -p /newroot
mount -t btrfs ${flags:+-o "$flags"} "$dev" /newroot 2>/tmp/err || panic "mount: $(cat /tmp/err) ($(dmesg | grep -i btrfs | tail -n 2 | tr '\n' ' '))"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
"""

ROOT_INIT = r"""#!/bin/busybox sh
export PATH=/bin:/sbin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin 2>/dev/null
mount -t sysfs sys /sys; [ -e /dev/null ] || mount -t devtmpfs dev /dev
echo "Welcome to $(cat /etc/hostname)!"
while read spec file type opts rest; do
  case "$spec" in ''|\#*) continue;; esac
  [ "$file" = / ] && continue
  [ "$type" = swap ] && continue
  mkdir -p "$file"
  dev=$(findfs "$spec" 2>/dev/null) && mount -t "$type" -o "$opts" "$dev" "$file" || {
    echo "[FAILED] Failed to mount $file ($spec)."
    echo "You are in emergency mode."
    exec sh
  }
  echo "[  OK  ] Mounted $file."
done < /etc/fstab
ifconfig lo up; ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up 2>/dev/null
mkdir -p /srv/www; cat /etc/hostname > /srv/www/index.html
httpd -p PORT -h /srv/www
echo "[  OK  ] Reached target Multi-User System."
echo "$(cat /etc/hostname) login: (tiny: a root shell follows)"
exec sh
""".replace("PORT", str(PORT))


def cache_dir() -> Path:
    return Path(os.environ.get("SUBVAULT_KERNEL_CACHE", "/var/cache/subvault/tiny-kernel"))


def kernel_tree() -> tuple[Path, str]:
    """Return (the unpacked kernel package's root, its release), downloading it once into the cache."""
    base = cache_dir()
    done = sorted(base.glob("*/.unpacked"))
    if done:
        root = done[-1].parent
        return root, _release(root)
    dep = process.run(["apt-cache", "depends", KERNEL_META], what="apt-cache depends").stdout
    found = re.search(r"Depends: (linux-image-\S+)", dep)
    if not found:
        raise SubvaultError(f"no kernel package behind {KERNEL_META}; run apt-get update")
    pkg = found.group(1)
    root = base / pkg
    dl = base / "download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)
    os.chmod(dl, 0o777)  # apt's sandbox user writes here
    process.run(["apt-get", "download", pkg], cwd=str(dl), what=f"apt-get download {pkg}")
    deb = next(dl.glob("*.deb"))
    shutil.rmtree(root, ignore_errors=True)
    process.run(["dpkg-deb", "-x", str(deb), str(root)], what="dpkg-deb -x")
    shutil.rmtree(dl, ignore_errors=True)
    (root / ".unpacked").write_text(pkg + "\n")
    return root, _release(root)


def _release(root: Path) -> str:
    return next((root / "lib" / "modules").iterdir()).name


def _modinfo(path: Path) -> tuple[str, list[str]]:
    """(name, dependencies) read from a module's .modinfo strings."""
    data = path.read_bytes()
    deps = re.search(rb"\x00depends=([^\x00]*)\x00", data)
    name = re.search(rb"\x00name=([^\x00]*)\x00", data)
    nm = name.group(1).decode() if name else path.name.split(".ko")[0]
    return nm, [d for d in (deps.group(1).decode().split(",") if deps else []) if d]


def module_order(kroot: Path, release: str, wanted: tuple[str, ...]) -> list[Path]:
    """The module files for wanted and their dependencies, dependencies first."""
    by_name: dict[str, Path] = {}
    for p in (kroot / "lib" / "modules" / release / "kernel").rglob("*.ko*"):
        by_name.setdefault(p.name.split(".ko")[0].replace("-", "_"), p)
    order: list[Path] = []

    def visit(name: str) -> None:
        p = by_name.get(name.replace("-", "_"))
        if p is None or p in order:
            return
        for dep in _modinfo(p)[1]:
            visit(dep)
        if p not in order:
            order.append(p)

    for w in wanted:
        visit(w)
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 1) -> bytes:
    nm = name.encode() + b"\x00"
    head = b"070701" + b"".join(b"%08X" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nm), 0))
    out = head + nm
    out += b"\x00" * (-len(out) % 4) + data
    return out + b"\x00" * (-len(out) % 4)


def build_initramfs(dest: Path, *, with_btrfs: bool = True) -> Path:
    """Write an uncompressed newc initramfs for the cached kernel to dest; return dest."""
    kroot, release = kernel_tree()
    wanted = tuple(m for m in MODULES if with_btrfs or m != "btrfs")
    mods = module_order(kroot, release, wanted)
    busybox = shutil.which("busybox")
    if busybox is None or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        raise SubvaultError("busybox-static is needed to build the tiny machine's initramfs: apt-get install busybox-static")
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG
    entries = [_cpio_entry(n, d) for n in ("bin", "dev", "proc", "sys", "tmp", "newroot", "lib", "lib/modules")]
    entries.append(_cpio_entry("bin/busybox", f | 0o755, Path(busybox).read_bytes()))
    entries.append(_cpio_entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    entries.append(_cpio_entry("init", f | 0o755, INITRAMFS_INIT.encode()))
    entries.append(_cpio_entry("modules.order", f | 0o644, "".join(p.name + "\n" for p in mods).encode()))
    entries += [_cpio_entry(f"lib/modules/{p.name}", f | 0o644, p.read_bytes()) for p in mods]
    # inode numbers must differ for the kernel's unpacker not to hard-link entries
    blob = b"".join(_renumber(e, i + 1) for i, e in enumerate(entries)) + _cpio_entry("TRAILER!!!", 0, ino=0)
    dest.write_bytes(blob)
    return dest


def _renumber(entry: bytes, ino: int) -> bytes:
    return entry[:6] + b"%08X" % ino + entry[14:]


GRUB_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
search --no-floppy --fs-uuid --set=root {uuid}
linux /{subvol}/boot/vmlinuz-{release} root=UUID={uuid} rootflags=subvol={subvol} console=ttyS0,115200 panic=-1
initrd /{subvol}/boot/initrd.img-{release}
boot
"""


def grub_efi(dest: Path, fs_uuid: str, *, subvol: str = "root") -> Path:
    """Write a standalone GRUB for UEFI (the removable path's BOOTX64.EFI) that boots the tiny kernel from btrfs."""
    _, release = kernel_tree()
    if shutil.which("grub-mkstandalone") is None or not Path("/usr/lib/grub/x86_64-efi").is_dir():
        raise SubvaultError("grub-efi-amd64-bin is needed for a firmware-bootable machine: apt-get install grub-efi-amd64-bin")
    cfg = dest.with_suffix(".cfg")
    cfg.write_text(GRUB_CFG.format(uuid=fs_uuid, subvol=subvol, release=release))
    process.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(dest), "--locales=", "--themes=", "--fonts=",
                 "--modules=part_gpt btrfs search search_fs_uuid linux serial terminal", f"boot/grub/grub.cfg={cfg}"], what="grub-mkstandalone")
    cfg.unlink()
    return dest


GRUB_PC = Path("/usr/lib/grub/i386-pc")
KERNEL_SECTOR, DRIVE_CHECK = 0x5C, 0x66  # boot.img: the LBA of core.img's first sector; the jump over the BIOS drive check
BLOCKLIST = 0x200 - 12  # core.img's first sector ends with {start: u64, len: u16, segment: u16}: where the rest of it is


def grub_bios(disk: Path, embed_lba: int, fs_uuid: str, root: Path, *, subvol: str = "root") -> None:
    """Install GRUB for BIOS as grub-install does: boot.img's code into the MBR, core.img at embed_lba (a BIOS boot
    partition), GRUB's modules and grub.cfg in root's /boot/grub. core.img finds that directory by the filesystem's UUID."""
    _, release = kernel_tree()
    if shutil.which("grub-mkimage") is None or not (GRUB_PC / "boot.img").is_file():
        raise SubvaultError("grub-pc-bin is needed for a BIOS-bootable machine: apt-get install grub-pc-bin")
    grub = root / "boot" / "grub"
    shutil.copytree(GRUB_PC, grub / "i386-pc", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.img", "*.image", "*.module"))
    (grub / "grub.cfg").write_text(GRUB_CFG.format(uuid=fs_uuid, subvol=subvol, release=release))
    early = grub / "early.cfg"
    # The serial console first, so that GRUB's own errors (a missing /boot/grub, a bad module) reach the drill's log.
    early.write_text(f"serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
                     f"search.fs_uuid {fs_uuid} root\nset prefix=($root)/{subvol}/boot/grub\n")
    core_path = grub / "core.img"
    process.run(["grub-mkimage", "-O", "i386-pc", "-o", str(core_path), "-c", str(early), "-p", f"/{subvol}/boot/grub",
                 "biosdisk", "part_gpt", "part_msdos", "btrfs", "search_fs_uuid", "serial", "terminal"], what="grub-mkimage")
    core = bytearray(core_path.read_bytes())
    early.unlink()
    core_path.unlink()
    sectors = -(-len(core) // 512)
    struct.pack_into("<QH", core, BLOCKLIST, embed_lba + 1, sectors - 1)
    with open(disk, "r+b") as fh:
        mbr = bytearray(fh.read(512))
        mbr[:440] = (GRUB_PC / "boot.img").read_bytes()[:440]
        mbr[3:0x5A] = b"\0" * (0x5A - 3)  # no BIOS parameter block on a partitioned disk
        struct.pack_into("<Q", mbr, KERNEL_SECTOR, embed_lba)
        mbr[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"  # a hard disk: trust the drive number the BIOS passes
        fh.seek(0)
        fh.write(mbr)
        fh.seek(embed_lba * 512)
        fh.write(bytes(core))


def install(root: Path, fs_uuid: str, *, subvol: str = "root", with_btrfs: bool = True) -> None:
    """Make the root subvolume at root bootable: busybox, /sbin/init, kernel and initramfs in /boot, a BLS entry."""
    kroot, release = kernel_tree()
    for d in ("bin", "sbin", "boot/loader/entries", "dev", "proc", "sys", "run", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox")
    assert busybox is not None
    shutil.copyfile(busybox, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    if not (root / "bin" / "sh").exists():
        os.symlink("busybox", root / "bin" / "sh")
    (root / "sbin" / "init").write_text(ROOT_INIT)
    os.chmod(root / "sbin" / "init", 0o755)
    shutil.copyfile(kroot / "boot" / f"vmlinuz-{release}", root / "boot" / f"vmlinuz-{release}")
    build_initramfs(root / "boot" / f"initrd.img-{release}", with_btrfs=with_btrfs)
    (root / "boot" / "loader" / "entries" / f"tiny-{release}.conf").write_text(
        f"title Tiny Linux ({release})\nversion {release}\nlinux /boot/vmlinuz-{release}\ninitrd /boot/initrd.img-{release}\n"
        f"options root=UUID={fs_uuid} rootflags=subvol={subvol} quiet\n"
    )
