"""The one error hierarchy.

Rules:
- Every error subvault raises on purpose derives from `SubvaultError` and carries a
  message written for a human: what went wrong and what to do about it, on one line.
- A class says what happened, not whether to retry: nothing decides on "transient" or
  "permanent". Every failed subvolume or target is tried again by the next timer run,
  whatever the cause, and the message says what to do before then.
- Each class maps to one exit code (see `exit_code`), documented in the README.
- Catches are narrow inside a subvolume's or a target's work. The per-subvolume and
  per-target loops catch `SubvaultError` and `OSError` (the system refusing: a
  read-only disk, a file where a directory was expected), record it as that one's
  failure and go on with the rest (exit 3). `run` also goes on to its next layer after
  any exception in one layer. Anything else reaches the CLI boundary, which prints one
  line naming the command and what failed, and exits 1: never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

# Rule: a message is for a person, so it is bounded. Past this many characters it is
# cut, and says how much was cut (one refusal once printed a single 150 KB line).
MAX_MESSAGE = 1000

# Lines a tool prints after its real error that say nothing about the cause; the
# detail of CommandFailed is the last line that is not one of these.
_TRAILERS = ("age: report unexpected or unhelpful errors",)


MAX_LINES = 200


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """Return text with each line cut to about `limit` characters, saying how much was
    left out; a report of many lines (config check: every error at once) keeps up to
    MAX_LINES of them, each whole up to the limit."""
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"… ({len(lines) - MAX_LINES} more lines)"]
    return "\n".join(line if len(line) <= limit else f"{line[:limit]}… ({len(line) - limit} more characters)" for line in lines)


class SubvaultError(Exception):
    """Root of every error subvault raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(SubvaultError):
    """The config file is malformed or names something impossible. Exit 2."""

    exit_code = EXIT_USAGE


class UsageError(SubvaultError):
    """Bad command-line arguments. Exit 2."""

    exit_code = EXIT_USAGE


class LockHeld(SubvaultError):
    """Another subvault process holds the lock."""


class CommandFailed(SubvaultError):
    """An external command exited non-zero; carries the argv and the stderr tail."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str, what: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        head = what or " ".join(argv[:3])
        super().__init__(f"{head} failed: {cause_line(stderr_tail) or f'exit {returncode}'}")


def cause_line(stderr: str) -> str:
    """Return the line of a tool's stderr that names the cause: the last one that is not a known trailer."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(_TRAILERS)]
    return bounded((causes or lines or [""])[-1], 300)


class NoSpace(SubvaultError):
    """A filesystem is full (ENOSPC)."""


class StalledTransfer(SubvaultError):
    """A pipeline made no progress for too long."""


class NotBtrfs(SubvaultError):
    """A configured path is missing or is not on btrfs."""


class SnapshotNumberTaken(SubvaultError):
    """The snapper number chosen for a new snapshot already exists."""


class NotFound(SubvaultError):
    """A named subvolume, snapshot, target or object does not exist."""


class Refused(SubvaultError):
    """An operation was refused to protect data (an invariant or an unsafe layout)."""


class RenamedSubvolume(SubvaultError):
    """A btrfs target holds this subvolume's receives under its old configured name: no second full send (invariant 7)."""


class UnknownName(NotFound):
    """A subvolume or target named on the command line is not in the config. Exit 2 (usage)."""

    exit_code = EXIT_USAGE


class BadArgument(UsageError, ValueError):
    """A command-line value that does not parse (a time for --at, a snapshot reference). Exit 2.

    Also a ValueError, so that callers that parse config values with the same function
    keep catching it as one.
    """


def describe(error: BaseException) -> str:
    """One line for any error: a SubvaultError's message; an OSError in the system's words
    with the path (`Read-only file system: /mnt/nas/offsite/x`); anything else its type and message."""
    if isinstance(error, SubvaultError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
        return f"{error.strerror}: {' -> '.join(paths)}" if paths else error.strerror
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def about(subject: str, message: str) -> str:
    """Return "subject: message", without saying the subject twice when the message already starts with it."""
    return message if message.startswith(f"{subject}: ") or message.startswith(f"{subject} ") else f"{subject}: {message}"


def exit_code(error: BaseException) -> int:
    """Given an error, return the process exit code the CLI uses for it."""
    if isinstance(error, SubvaultError):
        return error.exit_code
    return EXIT_FAILED
