"""An SMTP receiver for the notification tests: every message it is sent, parsed."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from email.message import EmailMessage
from typing import Any


class Inbox:
    """aiosmtpd handler: every message it receives, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted"

    def wait(self, count: int, seconds: float = 10) -> list[EmailMessage]:
        deadline = time.monotonic() + seconds
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.messages


def message_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html", "plain"))
    assert part is not None
    return str(part.get_content())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
