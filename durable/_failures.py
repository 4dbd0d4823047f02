"""Errors as stored: type name, message and the original traceback text."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import orjson

from ._errors import StepFailed


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What the journal keeps of an exception, so a restart shows the same error."""

    error_type: str
    message: str
    stack: str

    @property
    def summary(self) -> str:
        """``Type: message``, the one-line form."""
        return f"{self.error_type}: {self.message}" if self.error_type else self.message

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        stack = "".join(traceback.format_exception(exc))
        if isinstance(exc, StepFailed) and exc.stack:
            stack += f"\nThe error of step {exc.step_name}:\n{exc.stack}"
        return cls(type(exc).__name__, str(exc), stack)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"type": self.error_type, "message": self.message, "stack": self.stack})

    @classmethod
    def reason(cls, text: str | None) -> ErrorInfo | None:
        """Why a run was cancelled (a deadline, its parent), as its outcome's error."""
        return None if text is None else cls("", text, "")

    @classmethod
    def stored(cls, summary: str | None, data: bytes | None) -> ErrorInfo | None:
        """From the journal's columns; rows written before stacks were kept have only the summary."""
        if data is not None:
            info = orjson.loads(data)
            return cls(info["type"], info["message"], info.get("stack", ""))
        if summary is None:
            return None
        error_type, sep, message = summary.partition(": ")
        return cls(error_type, message, "") if sep else cls("", summary, "")
