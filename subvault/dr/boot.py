"""Booting the restored machine in QEMU: which way, success or a reason, application probes.

Rules:
- Two ways. firmware: OVMF (uefi) or SeaBIOS (bios), as captured, through the restored
  bootloader; possible only when that bootloader is there (uefi: the ESP's removable
  path EFI/BOOT/BOOTX64.EFI, since a fresh NVRAM knows no other; bios: boot code in the
  MBR, which the restore writes back as captured) and the firmware is installed. When
  the firmware way is not taken, the result says why it is not proven. direct: the kernel and initramfs found in the
  restored /boot, the command line from its BLS entry (/boot/loader/entries) or grub.cfg.
  "auto" uses firmware when it is possible here, else direct; the report names the way.
- Success is the milestone regex on the serial console within the timeout. Failure names
  the reason from the console (kernel panic, initramfs emergency shell, "Failed to mount"
  with what, systemd emergency mode), or the timeout, or QEMU stopping first.
- Probes run only after the milestone, each reported on its own: TCP ports through
  QEMU's restricted user network (127.0.0.1 host forwards only), and a command over the
  serial console whose output must match.
- The whole serial log is kept (the caller says where); the report holds its last 40 lines.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from subvault.dr import qemu
from subvault.dr.report import Check

DEFAULT_MILESTONE = r"Reached target .*Multi-User System|multi-user\.target|\blogin:"
TAIL_LINES = 40
CONSOLE_ARGS = "console=ttyS0,115200 panic=-1"

_PANIC = re.compile(r"VFS: Unable to mount root|Kernel panic - not syncing")
_INITRAMFS_SHELL = re.compile(r"Dropping to a shell|dracut-emergency|dracut Warning: .*emergency|^\(initramfs\)")
_EMERGENCY = re.compile(r"You are in emergency mode|Entering emergency mode|Welcome to emergency mode")
_FAILED_MOUNT = re.compile(r"Failed to mount (.+?)\.?\s*$")
_HINT = re.compile(r"mount|ALERT|Gave up|does not exist|BTRFS|No such|unknown filesystem", re.I)


@dataclass(frozen=True)
class BootSettings:
    enabled: bool = False
    timeout: float = 300.0
    milestone: str = DEFAULT_MILESTONE
    method: str = "auto"  # auto | direct | firmware
    ports: tuple[int, ...] = ()
    command: str = ""
    expect: str = ""  # regex the command's output must match (empty: exit status 0 is enough)


@dataclass(frozen=True)
class BootEntry:
    kernel: Path
    initrd: Path | None
    options: str
    source: str  # the file it came from


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    line: str = ""


@dataclass
class BootResult:
    method: str
    accelerator: str
    ok: bool
    reason: str
    milestone: str = ""  # the console line that matched
    seconds: float = 0.0  # start of QEMU to the milestone (or to the failure)
    tail: list[str] = field(default_factory=list)
    probes: list[Check] = field(default_factory=list)
    log: str = ""
    way_note: str = ""  # why this way (e.g. why not firmware)
    firmware_not_proven: str = ""  # why the firmware way was not taken ("" when the machine booted through its firmware)

    def to_json(self) -> dict[str, object]:
        return {"method": self.method, "accelerator": self.accelerator, "milestone": self.milestone or None,
                "seconds": round(self.seconds, 3), "ok": self.ok, "reason": self.reason, "note": self.way_note,
                "firmware_not_proven": self.firmware_not_proven or None,
                "probes": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.probes],
                "log": self.log, "console_tail": self.tail}


# ---- pure: boot entries and the console verdict

def parse_bls(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#") and key not in out:
            out[key] = value.strip()
    return out


def parse_grub_cfg(text: str) -> tuple[str, str | None, str] | None:
    """(kernel path, initrd path, options) of the first menu entry's linux line, or None."""
    linux = re.search(r"^\s*linux(?:efi|16)?\s+(\S+)[ \t]*(.*)$", text, re.M)
    if not linux:
        return None
    rest = text[linux.end():]
    initrd = re.search(r"^\s*initrd(?:efi|16)?\s+(\S+)", rest, re.M)
    return linux.group(1), initrd.group(1) if initrd else None, linux.group(2).strip()


def kernel_command_line(options: str) -> str:
    """The restored entry's options, with the serial console and reboot-on-panic added (last console= wins)."""
    return f"{options} {CONSOLE_ARGS}".strip()


def judge(lines: list[str], exited: int | None, milestone: re.Pattern[str], timed_out: bool = False, timeout: float = 0) -> Verdict | None:
    """The boot's verdict from the console lines so far, or None while it is undecided."""
    failed_mount = ""
    for i, line in enumerate(lines):
        if milestone.search(line):
            return Verdict(True, "milestone reached", line.strip())
        m = _FAILED_MOUNT.search(line)
        if m and not failed_mount:
            failed_mount = f"Failed to mount {m.group(1).strip()}"
        if _PANIC.search(line):
            return Verdict(False, f"kernel panic: {line.strip()}", line.strip())
        if _INITRAMFS_SHELL.search(line):
            hint = next((x.strip() for x in reversed(lines[max(0, i - 8):i]) if _HINT.search(x)), "")
            return Verdict(False, "initramfs emergency shell" + (f": {hint}" if hint else ""), line.strip())
        if _EMERGENCY.search(line):
            return Verdict(False, failed_mount + ", emergency mode" if failed_mount else "emergency mode", line.strip())
    if exited is not None:
        return Verdict(False, f"QEMU stopped (exit {exited}) before the milestone{'; ' + failed_mount if failed_mount else ''}")
    if timed_out:
        return Verdict(False, f"timeout: no milestone within {timeout:.0f}s{'; ' + failed_mount if failed_mount else ''}")
    return None


# ---- finding what to boot in the restored tree

def find_entry(root: Path, boot: Path | None = None, top: Path | None = None) -> BootEntry | None:
    """The newest BLS entry, else the first grub.cfg entry, under the restored root (and /boot, when separate)."""
    boot = boot or root / "boot"
    entries = sorted((boot / "loader" / "entries").glob("*.conf"), reverse=True)
    for e in entries:
        fields = parse_bls(e.read_text(errors="replace"))
        kernel = _resolve(fields.get("linux", ""), root, boot, top)
        if kernel is None:
            continue
        initrd = _resolve(fields.get("initrd", "").split()[0] if fields.get("initrd") else "", root, boot, top)
        return BootEntry(kernel, initrd, fields.get("options", ""), str(e))
    for cfg in (boot / "grub" / "grub.cfg", boot / "grub2" / "grub.cfg"):
        if cfg.is_file():
            got = parse_grub_cfg(cfg.read_text(errors="replace"))
            if got:
                kernel = _resolve(got[0], root, boot, top)
                if kernel:
                    return BootEntry(kernel, _resolve(got[1] or "", root, boot, top), got[2], str(cfg))
    return None


def _resolve(path: str, root: Path, boot: Path, top: Path | None) -> Path | None:
    if not path:
        return None
    rel = path.lstrip("/")
    for base in (root, boot, top):
        if base is not None and (base / rel).is_file():
            return base / rel
    return None


def firmware_possible(firmware: str, esp_has_removable: bool, mbr_has_code: bool) -> tuple[bool, str]:
    """Whether a firmware boot can be tried here: (True, how), or (False, why the firmware way is not proven)."""
    if firmware == "uefi":
        if not qemu.first_existing(qemu.OVMF_CODE) or not qemu.first_existing(qemu.OVMF_VARS):
            return False, "UEFI firmware boot not proven: OVMF is not installed (apt-get install ovmf)"
        if not esp_has_removable:
            return False, "UEFI firmware boot not proven: the restored ESP has no EFI/BOOT/BOOTX64.EFI, the only loader a fresh NVRAM boots"
        return True, "OVMF through the restored ESP"
    if firmware == "bios":
        if not qemu.first_existing(qemu.SEABIOS):
            return False, "BIOS firmware boot not proven: SeaBIOS is not installed (apt-get install seabios)"
        if not mbr_has_code:
            return False, ("BIOS firmware boot not proven: the restored disk has no boot code in its first sectors (the capture holds "
                           "none: its MBR was empty, or an older subvault captured it) and a drill does not run grub-install")
        return True, "SeaBIOS through the restored boot sectors (as captured) and /boot"
    return False, f"firmware boot not proven: firmware {firmware or 'unknown'} is not one QEMU can start"


# ---- running it

def boot(settings: BootSettings, disks: list[str], entry: BootEntry | None, firmware: str, fw_ok: tuple[bool, str],
         work: Path, log: Path, say: Callable[[str], None] = lambda s: None) -> BootResult:
    """Boot the restored disks once; return the result. Never leaves QEMU running."""
    if qemu.qemu_path() is None:
        return BootResult("none", "none", False, "QEMU is not installed (apt-get install qemu-system-x86)")
    method = settings.method
    note = fw_ok[1]
    if method == "auto":
        method = "firmware" if fw_ok[0] else "direct"
    unproven = "" if method == "firmware" else (fw_ok[1] if not fw_ok[0] else "firmware boot not tried: [dr] boot_method = \"direct\"")
    if method == "firmware" and not fw_ok[0]:
        return BootResult("firmware", "none", False, fw_ok[1], way_note=note, firmware_not_proven=fw_ok[1])
    if method == "direct" and entry is None:
        return BootResult("direct", "none", False, "no kernel found: no BLS entry or grub.cfg in the restored /boot names one", way_note=note,
                          firmware_not_proven=unproven)
    work.mkdir(parents=True, exist_ok=True)
    spec = qemu.VmSpec(disks=disks, accel="tcg", firmware=firmware)
    if method == "direct":
        assert entry is not None
        spec.kernel = str(shutil.copyfile(entry.kernel, work / "vmlinuz"))
        spec.initrd = str(shutil.copyfile(entry.initrd, work / "initrd")) if entry.initrd else None
        spec.append = kernel_command_line(entry.options)
        note = f"direct: {entry.source}"  # why not firmware: firmware_not_proven
    elif firmware == "uefi":
        spec.vars_copy = str(shutil.copyfile(qemu.first_existing(qemu.OVMF_VARS) or "", work / "OVMF_VARS.fd"))
    spec.accel = qemu.accelerator(Path(spec.kernel) if spec.kernel else None)
    note += f"; {spec.accel.upper()}: {qemu.accelerator_reason()}"
    spec.forwards = {qemu.free_port(): p for p in settings.ports}
    say(f"boot: {method} on {spec.accel.upper()}, waiting up to {settings.timeout:.0f}s for the milestone")
    milestone = re.compile(settings.milestone)
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    con = qemu.Console(qemu.argv_for(spec), log)
    try:
        deadline = started + settings.timeout
        verdict = con.wait(lambda lines, exited: judge(lines, exited, milestone), deadline)
        if verdict is None:
            verdict = judge(con.lines, con.exited, milestone, timed_out=True, timeout=settings.timeout)
        assert verdict is not None
        seconds = time.monotonic() - started
        result = BootResult(method, spec.accel, verdict.ok, verdict.reason, verdict.line if verdict.ok else "", seconds, way_note=note, log=str(log),
                            firmware_not_proven=unproven)
        if verdict.ok:
            for host, guest in spec.forwards.items():
                result.probes.append(probe_port(host, guest, settings.timeout))
            if settings.command:
                result.probes.append(probe_command(con, settings.command, settings.expect))
    finally:
        con.stop()
    result.tail = con.lines[-TAIL_LINES:]
    return result


def probe_port(host_port: int, guest_port: int, budget: float, window: float = 20.0) -> Check:
    """A TCP port answers when the guest accepts: the forward stays open (or data comes). Slirp closes it when refused."""
    name = f"probe tcp/{guest_port}"
    deadline = time.monotonic() + min(window, budget)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", host_port), timeout=3) as s:
                s.settimeout(1.5)
                try:
                    data = s.recv(64)
                except TimeoutError:
                    return Check(name, True, "accepted a connection (through 127.0.0.1 forward)")
                if data:
                    return Check(name, True, f"answered: {data[:40]!r}")
                last = "connection closed: nothing listening"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)  # polling the forward; the service may start just after the milestone
    return Check(name, False, last)


_RC = re.compile(r"^__SUBVAULT_RC=(\d+)")
_PROMPT = re.compile(r"[#$>] ?$")


def probe_command(con: qemu.Console, command: str, expect: str, wait: float = 30.0) -> Check:
    """Run command in the console's shell; ok when it exits 0 and its output matches expect."""
    name = f"probe command {command!r}"
    deadline = time.monotonic() + wait
    con.wait(lambda lines, exited: True if (exited is not None or _PROMPT.search(con.partial())) else None, time.monotonic() + 10)
    start = len(con.lines)
    con.send(f"{command}; echo __SUBVAULT_RC=$?\n")
    found = con.wait(lambda lines, exited: next((i for i in range(start, len(lines)) if _RC.match(lines[i])), None), deadline)
    if found is None:
        return Check(name, False, "no answer on the serial console")
    rc = int(_RC.match(con.lines[found]).group(1))  # type: ignore[union-attr]  # found is the index of a line _RC matched (the wait above)
    output = "\n".join(x for x in con.lines[start:found] if "__SUBVAULT_RC" not in x)
    if rc != 0:
        return Check(name, False, f"exit {rc}: {output[-200:]}")
    if expect and not re.search(expect, output, re.M):
        return Check(name, False, f"output does not match {expect!r}: {output[-200:]}")
    return Check(name, True, output.strip()[-120:])
