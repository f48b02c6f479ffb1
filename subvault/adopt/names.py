"""Config names for what adopt finds: subvolumes and targets. Pure.

Rules:
- A name is what subvault's schema accepts (NAME_RE: an ASCII letter or digit, then
  letters, digits and `_.-`), at most 60 characters, unique among the names given.
- Accents are dropped (rööt → root), any other character becomes `_`; a clash gets `_2`,
  `_3`, ...; a name left empty is the fallback.
"""

from __future__ import annotations

import unicodedata

from subvault.config.schema import NAME_RE


def unique_name(wanted: str, names: set[str], fallback: str = "subvolume") -> str:
    """A config name for wanted, not in names; added to names.

    Every candidate the loop tries is a valid name but for its uniqueness, so it ends.
    """
    ascii_ = unicodedata.normalize("NFKD", wanted).encode("ascii", "ignore").decode() if not wanted.isascii() else wanted
    base = "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "_" for c in ascii_).lstrip("_.-") or fallback
    name, n = base[:60], 2
    while name in names or not NAME_RE.match(name):
        name = f"{base[:57]}_{n}"
        n += 1
    names.add(name)
    return name
