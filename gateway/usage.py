"""Token counts from OpenAI-style responses, read as the bytes stream past: nothing is held back.

- JSON responses: `usage` sits at the end of the body (vLLM, OpenAI); the scanner keeps only
  the last few KiB and parses the last `"usage": {...}` object in them.
- SSE (`text/event-stream`): each `data:` line is looked at as it passes; a chunk carrying
  `usage` (sent last when the client asked for `stream_options: {"include_usage": true}`) gives
  exact figures. Without it the prompt is unknown (0) and the completion is estimated as one
  token per content chunk (vLLM sends one token per chunk by default); such counts are marked
  `estimated` in the metering record.
"""

from __future__ import annotations

import json
import re

_TAIL_BYTES = 16 * 1024
_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')
_MAX_LINE = 256 * 1024  # an SSE line longer than this is skipped, not accumulated


class UsageScanner:
    __slots__ = (
        "_line",
        "_skip_line",
        "_sse",
        "_tail",
        "chunks",
        "completion_tokens",
        "exact",
        "prompt_tokens",
    )

    def __init__(self, content_type: bytes):
        self._sse = content_type.startswith(b"text/event-stream")
        self._tail = b""
        self._line = b""
        self._skip_line = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.chunks = 0
        self.exact = False

    def feed(self, data: bytes) -> None:
        if self._sse:
            self._feed_sse(data)
        else:
            self._tail = (self._tail + data)[-_TAIL_BYTES:]

    def finish(self) -> None:
        if self._sse:
            if self._line:
                self._sse_line(self._line)
            if not self.exact:
                self.completion_tokens = self.chunks
            return
        for match in reversed(list(_USAGE.finditer(self._tail))):
            if self._take(match.group(1)):
                return

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def _feed_sse(self, data: bytes) -> None:
        lines = data.split(b"\n")
        lines[0] = self._line + lines[0]
        self._line = lines.pop()
        if len(self._line) > _MAX_LINE:
            self._line, self._skip_line = b"", True
        for line in lines:
            if self._skip_line:
                self._skip_line = False
                continue
            self._sse_line(line)

    def _sse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]" or not payload:
            return
        if b'"usage"' in payload:
            match = _USAGE.search(payload)
            if match and self._take(match.group(1)):
                return
        if b'"content"' in payload or b'"text"' in payload:
            self.chunks += 1

    def _take(self, raw: bytes) -> bool:
        try:
            usage = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(usage, dict):
            return False
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int):
            return False
        self.prompt_tokens = prompt
        # Embeddings report only prompt_tokens (and total_tokens).
        self.completion_tokens = completion if isinstance(completion, int) else 0
        self.exact = True
        return True
