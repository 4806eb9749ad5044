"""The one error type of minictr, and the exit codes it maps to.

Every failure a user can meet is a ``StepError``: it names the step that failed (the same
name ``--explain`` prints), the errno when the kernel refused something, and a hint that
says what to do. The CLI prints it as one line and exits 125, as Docker does.
"""

from __future__ import annotations

import errno as errno_mod
import os

# Exit codes, as `docker run` has them (see docker-run(1), "Exit Status").
EXIT_RUNTIME_ERROR = 125  # minictr itself failed: nothing of the command ran
EXIT_NOT_EXECUTABLE = 126  # the command exists but could not be executed
EXIT_NOT_FOUND = 127  # the command was not found in the container


class StepError(Exception):
    """A step of minictr failed: which step, which errno (if any), and what to do."""

    def __init__(
        self,
        step: str,
        message: str,
        *,
        errno: int | None = None,
        hint: str | None = None,
        exit_code: int = EXIT_RUNTIME_ERROR,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.errno = errno
        self.hint = hint
        self.exit_code = exit_code

    @classmethod
    def from_os_error(cls, step: str, err: OSError, hint: str | None = None) -> StepError:
        what = err.strerror or str(err)
        if err.filename is not None:
            what = f"{what}: {os.fsdecode(err.filename)}"
        return cls(step, what, errno=err.errno, hint=hint)

    def __str__(self) -> str:
        """One line: ``minictr: <step>: <message> [ERRNO]: <hint>``."""
        line = f"minictr: {self.step}: {self.message}"
        if self.errno:
            line += f" [{errno_mod.errorcode.get(self.errno, self.errno)}]"
        if self.hint:
            line += f": {self.hint}"
        return line

    def to_dict(self) -> dict[str, object]:
        """For crossing the pipe from the container's init to the runtime."""
        return {
            "step": self.step,
            "message": self.message,
            "errno": self.errno,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> StepError:
        return cls(
            str(d["step"]),
            str(d["message"]),
            errno=d.get("errno"),  # type: ignore[arg-type]
            hint=d.get("hint"),  # type: ignore[arg-type]
            exit_code=int(d.get("exit_code", EXIT_RUNTIME_ERROR)),  # type: ignore[arg-type]
        )
