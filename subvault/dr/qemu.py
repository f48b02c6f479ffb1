"""Running a restored machine in QEMU: the accelerator probe, the command line, the serial console.

Rules:
- The VM has no network (`-nic none`), or, when ports are probed, QEMU's user network
  with `restrict=on` (the guest reaches nothing outside) and host forwards bound to
  127.0.0.1 only.
- Disks are attached with `snapshot=on`: the VM's writes go to a temporary overlay, so a
  boot never changes the restored images, and the drill may go on reading them.
- KVM is used only when a short probe boots a kernel with it; otherwise TCG. /dev/kvm
  existing proves nothing (it may abort or hang), so the probe has a time limit.
- The serial console is QEMU's stdio: every byte goes to the log file as it arrives.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from subvault import process
from subvault.errors import CommandFailed

QEMU = "qemu-system-x86_64"
OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")
SEABIOS = ("/usr/share/seabios/bios-256k.bin", "/usr/share/seabios/bios.bin")
KVM_PROBE_SECONDS = 8.0
_accel_cache: dict[str, str] = {}
T = TypeVar("T")


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def first_existing(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def accelerator(kernel: Path | None) -> str:
    """"kvm" when a kernel boots under KVM within a few seconds here, else "tcg". Probed once per process."""
    if "accel" in _accel_cache:
        return _accel_cache["accel"]
    accel = "tcg"
    _accel_cache["why"] = "no kernel to probe KVM with"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        usable = True
    except OSError as exc:
        usable = False
        _accel_cache["why"] = f"/dev/kvm: {exc.strerror}"
    if usable and kernel is not None and qemu_path():
        # A kernel without a root panics at once; with -no-reboot QEMU then exits. Under a broken KVM it aborts or hangs.
        argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
                "-serial", "stdio", "-nic", "none", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 root=/dev/null"]
        try:
            res = process.run(argv, check=False, timeout=KVM_PROBE_SECONDS)
            if res.returncode == 0 and "Kernel panic" in res.stdout:
                accel, _accel_cache["why"] = "kvm", "a probe boot under KVM worked"
            else:
                last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
                _accel_cache["why"] = f"a probe boot under KVM failed ({last[:120]})"
        except CommandFailed:  # timed out: KVM hangs here
            _accel_cache["why"] = f"a probe boot under KVM did not finish in {KVM_PROBE_SECONDS:.0f}s"
    _accel_cache["accel"] = accel
    return accel


def accelerator_reason() -> str:
    """Why accelerator() chose what it did (after it ran)."""
    return _accel_cache.get("why", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class VmSpec:
    disks: list[str]
    accel: str
    kernel: str | None = None  # direct boot; else firmware
    initrd: str | None = None
    append: str = ""
    firmware: str = "bios"  # "uefi" or "bios" (firmware boot)
    vars_copy: str | None = None  # a writable copy of OVMF_VARS (uefi)
    forwards: dict[int, int] = field(default_factory=dict)  # host port (127.0.0.1) -> guest port
    memory_mib: int = 512


def argv_for(spec: VmSpec) -> list[str]:
    """The QEMU command line for spec (pure)."""
    argv = [QEMU, "-accel", spec.accel, "-cpu", "host" if spec.accel == "kvm" else "max", "-smp", "2", "-m", str(spec.memory_mib),
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none"]
    for d in spec.disks:
        argv += ["-drive", f"file={d},format=raw,if=virtio,snapshot=on"]
    if spec.forwards:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in spec.forwards.items())
        argv += ["-nic", f"user,model=virtio-net-pci,restrict=on,{fwd}"]
    else:
        argv += ["-nic", "none"]
    if spec.kernel:
        argv += ["-kernel", spec.kernel, "-append", spec.append]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
    elif spec.firmware == "uefi":
        code = first_existing(OVMF_CODE)
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}", "-drive", f"if=pflash,format=raw,file={spec.vars_copy}"]
    else:
        bios = first_existing(SEABIOS)
        if bios:
            argv += ["-bios", bios]
    return argv


class Console:
    """A running VM and its serial console: lines as they arrive, all bytes kept in the log file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.lines: list[str] = []
        self._partial = b""
        self._cond = threading.Condition()
        self._fh = open(log, "wb")
        self.proc: process.Process[bytes] = process.spawn_console(argv)
        self.exited: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._fh.write(chunk)
            self._fh.flush()
            data = self._partial + chunk
            *done, self._partial = data.split(b"\n")
            with self._cond:
                self.lines += [_clean(x) for x in done]
                self._cond.notify_all()
        code = self.proc.wait()
        with self._cond:
            if self._partial:
                self.lines.append(_clean(self._partial))
                self._partial = b""
            self.exited = code
            self._cond.notify_all()

    def partial(self) -> str:
        with self._cond:
            return _clean(self._partial)

    def wait(self, test: Callable[[list[str], int | None], T | None], deadline: float) -> T | None:
        """Wait until test(lines, exited) returns something other than None, or the deadline; return it (None on timeout)."""
        with self._cond:
            while True:
                got = test(self.lines, self.exited)
                if got is not None:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or (self.exited is not None):
                    return test(self.lines, self.exited)
                self._cond.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        if self.proc.stdin is None or self.exited is not None:
            return
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except OSError:
            pass

    def stop(self, grace: float = 5.0) -> None:
        """Power the machine off (over the console), then stop QEMU if it is still running. Never raises."""
        self.send("\npoweroff -f\n")
        try:
            self.proc.wait(timeout=grace)
        except process.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except process.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=grace)
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        self._fh.close()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _clean(raw: bytes) -> str:
    return _ANSI.sub("", raw.decode(errors="replace"))
