"""Parse one snapper config (/etc/snapper/configs/NAME). Pure: text in, values out.

The format is shell-like `KEY="value"` lines (snapper's AsciiFile): comments start
with `#`, values may be quoted with double quotes. Only the keys adopt needs are
interpreted; every key is kept with its line number so errors can name it.

Mapping to subvault (rules):
- TIMELINE_LIMIT_{HOURLY,DAILY,WEEKLY,MONTHLY,YEARLY} → a retention string
  ("10h 10d 10m 10y"); a limit of 0 drops that unit; a range "A-B" keeps B (snapper
  keeps at most B). QUARTERLY has no unit in subvault's grammar.
- NUMBER_LIMIT → prechange_keep (upper bound of a range).
- TIMELINE_MIN_AGE, NUMBER_MIN_AGE, NUMBER_LIMIT_IMPORTANT, SPACE_LIMIT, FREE_LIMIT
  have no equivalent and are reported as such.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from subvault.adopt.source import AdoptInputError

LIMIT_UNITS = (("HOURLY", "h"), ("DAILY", "d"), ("WEEKLY", "w"), ("MONTHLY", "m"), ("YEARLY", "y"))
NO_EQUIVALENT = {
    "TIMELINE_MIN_AGE": "subvault prunes by calendar periods only (no minimum age)",
    "NUMBER_MIN_AGE": "pre-change snapshots are kept by count only (no minimum age)",
    "NUMBER_LIMIT_IMPORTANT": "subvault has no 'important' flag; pre-change snapshots are kept by count",
    "TIMELINE_LIMIT_QUARTERLY": "subvault's retention has no quarter unit",
    "SPACE_LIMIT": "subvault prunes by policy, not by space; `check` warns below check.min_free_percent",
    "FREE_LIMIT": "subvault prunes by policy, not by space; `check` warns below check.min_free_percent",
}
# Keys whose value does not matter to subvault, or that keep working unchanged.
IGNORED = {"QGROUP", "ALLOW_USERS", "ALLOW_GROUPS", "SYNC_ACL", "BACKGROUND_COMPARISON", "EMPTY_PRE_POST_MIN_AGE"}


@dataclass(frozen=True)
class Setting:
    value: str
    line: int


@dataclass
class SnapperConfig:
    name: str
    file: str
    settings: dict[str, Setting] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        s = self.settings.get(key)
        return s.value if s is not None else default

    def line_of(self, key: str) -> int | None:
        s = self.settings.get(key)
        return s.line if s is not None else None

    def flag(self, key: str, default: bool = False) -> bool:
        """Snapper's booleans: yes/no (also true/false, 1/0)."""
        value = self.get(key, "yes" if default else "no").strip().lower()
        if value in ("yes", "true", "1"):
            return True
        if value in ("no", "false", "0", ""):
            return False
        raise AdoptInputError(self.file, self.line_of(key), f'{key}="{value}" is not yes or no')

    @property
    def subvolume(self) -> str:
        return self.get("SUBVOLUME")

    @property
    def timeline_create(self) -> bool:
        return self.flag("TIMELINE_CREATE", default=False)

    @property
    def timeline_cleanup(self) -> bool:
        return self.flag("TIMELINE_CLEANUP", default=False)

    @property
    def number_cleanup(self) -> bool:
        return self.flag("NUMBER_CLEANUP", default=False)

    @property
    def empty_pre_post_cleanup(self) -> bool:
        return self.flag("EMPTY_PRE_POST_CLEANUP", default=False)

    def timeline_policy(self) -> str | None:
        """Return the retention string of TIMELINE_LIMIT_*, or None when every limit is 0.

        Snapper's defaults (all 10, weekly 0) apply to keys the file leaves out.
        """
        defaults = {"HOURLY": "10", "DAILY": "10", "WEEKLY": "0", "MONTHLY": "10", "YEARLY": "10"}
        tokens = []
        for word, unit in LIMIT_UNITS:
            key = f"TIMELINE_LIMIT_{word}"
            n = _upper(self, key, self.get(key, defaults[word]))
            if n:
                tokens.append(f"{n}{unit}")
        return " ".join(tokens) or None

    def number_limit(self) -> int:
        return _upper(self, "NUMBER_LIMIT", self.get("NUMBER_LIMIT", "50"))

    def unmapped(self) -> list[tuple[str, int | None, str]]:
        """Return (key=value, line, why) for every set key with no subvault equivalent."""
        out: list[tuple[str, int | None, str]] = []
        for key, why in NO_EQUIVALENT.items():
            s = self.settings.get(key)
            if s is None or s.value.strip() in ("", "0", "0-0"):
                continue
            out.append((f"{key}={s.value}", s.line, why))
        return out


def _upper(conf: SnapperConfig, key: str, value: str) -> int:
    """Return the upper bound of a snapper limit ("10" or "5-10"). Raise AdoptInputError if not a number."""
    text = value.strip()
    upper = text.split("-", 1)[1] if "-" in text else text
    if not (upper.isascii() and upper.isdigit()):
        raise AdoptInputError(conf.file, conf.line_of(key), f'{key}="{value}" is not a number or a range like "5-10"')
    return int(upper)


def parse_snapper_config(name: str, text: str, file: str) -> SnapperConfig:
    """Given a snapper config's text, return its settings. Raise AdoptInputError naming file:line.

    Checks what makes a config impossible to adopt: no SUBVOLUME, or FSTYPE other than btrfs.
    """
    conf = SnapperConfig(name=name, file=file)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise AdoptInputError(file, number, f'"{line[:60]}" is not a KEY="value" line')
        try:
            words = shlex.split(value, comments=True)
        except ValueError as exc:
            raise AdoptInputError(file, number, f"{key}: {exc}") from None
        conf.settings[key] = Setting(" ".join(words), number)
    if not conf.subvolume:
        raise AdoptInputError(file, None, "no SUBVOLUME= line; not a snapper config")
    fstype = conf.get("FSTYPE", "btrfs")
    if fstype != "btrfs":
        raise AdoptInputError(file, conf.line_of("FSTYPE"), f'FSTYPE="{fstype}": subvault adopts btrfs configs only')
    for key in ("TIMELINE_CREATE", "TIMELINE_CLEANUP", "NUMBER_CLEANUP", "EMPTY_PRE_POST_CLEANUP"):
        conf.flag(key)
    conf.timeline_policy()
    conf.number_limit()
    return conf


def parse_snapper_configs_list(text: str) -> list[str]:
    """Return SNAPPER_CONFIGS from /etc/default/snapper (or /etc/conf.d/snapper) text."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("SNAPPER_CONFIGS="):
            return shlex.split(line.partition("=")[2], comments=True)[0].split() if line.partition("=")[2].strip() else []
    return []
