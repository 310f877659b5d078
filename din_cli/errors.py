"""One error hierarchy for din; each class carries its process exit code.

Library code raises these; the root command (``din_cli.cli.main``) is the one
place that turns them into a single line on stderr and an exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses of ``din`` (documented in README and man pages)."""

    OK = 0
    ERROR = 1  # generic failure: bad data, failed operation
    USAGE = 2  # wrong flags or arguments (click uses 2 as well)
    VERIFICATION_FAILED = 3  # bytes, signature or record did not verify
    NOT_FOUND = 4  # file, CID, key, task... does not exist
    TX_REVERTED = 5  # a transaction reverted; the message carries the reason
    UNAVAILABLE = 6  # a backend (IPFS API, chain RPC) cannot be reached
    ALREADY_DONE = 7  # the step was already done (e.g. update already submitted)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class DinError(Exception):
    """Base of every error din reports to a user.

    ``message`` names the problem; ``hint`` (optional) says how to fix it.
    Both end up on one line of stderr.
    """

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class UsageError(DinError):
    """Arguments or flags that cannot work together or do not parse."""

    exit_code = ExitCode.USAGE


class InputError(DinError):
    """Input data that is malformed: not safetensors, a bad CSV, a truncated CAR."""

    exit_code = ExitCode.ERROR


class VerificationError(DinError):
    """Content, a signature or an on-chain record failed verification."""

    exit_code = ExitCode.VERIFICATION_FAILED


class NotFoundError(DinError):
    """A file, block, key, task or deployment does not exist."""

    exit_code = ExitCode.NOT_FOUND


class TransactionReverted(DinError):
    """A transaction (or call) reverted; ``reason`` is the contract's reason."""

    exit_code = ExitCode.TX_REVERTED

    def __init__(self, reason: str, hint: str | None = None, *, function: str | None = None):
        where = f"{function} reverted" if function else "transaction reverted"
        super().__init__(f"{where}: {reason}", hint)
        self.reason = reason
        self.function = function


class BackendUnavailable(DinError):
    """A service din talks to (IPFS RPC API, chain JSON-RPC) cannot be reached."""

    exit_code = ExitCode.UNAVAILABLE


class AlreadyDone(DinError):
    """The requested step was already carried out (safe to ignore in scripts)."""

    exit_code = ExitCode.ALREADY_DONE
