"""docs/webhooks.md tells receivers how to verify: its snippet must agree with the sender."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stream_sync.webhooks import signing
from stream_sync.webhooks.events import ALL_EVENTS

DOC = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"


def test_the_documented_verifier_accepts_what_the_sender_signs() -> None:
    snippet = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # our own documentation
    verify = namespace["verify"]
    body, secret, t = b'{"id":"e"}', "whsec_documented-secret-00000", 1_800_000_000
    header = signing.sign(secret, body, t)
    assert verify(secret, body, header, now=t + 1)
    assert not verify(secret, body + b"\n", header, now=t + 1)
    assert not verify("whsec_another-secret-0000000", body, header, now=t + 1)
    assert not verify(secret, body, header, now=t + signing.TOLERANCE + 1)


def test_every_event_type_is_documented() -> None:
    text = DOC.read_text()
    assert all(f"| `{event}` |" in text for event in ALL_EVENTS)
