"""Errors in an adopted tool's configuration: one line naming the file and the line."""

from __future__ import annotations

from subvault.errors import ConfigError


class AdoptInputError(ConfigError):
    """A snapper or btrbk configuration subvault cannot take over as written."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")
