"""A client for a chat server on this machine that grades responses (chapter 7's optional judge).

Two request formats: Ollama's (POST {url}/api/chat, answer {"message": {"content": ...}}) and
the OpenAI-compatible one of llama.cpp's server and vLLM (POST {url}/v1/chat/completions,
answer {"choices": [{"message": {"content": ...}}]}), both with deterministic decoding. Only
loopback hosts are allowed unless allow_remote=True, so the book's evaluation stays offline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from gpt2_core.errors import GPT2CoreError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
APIS = ("ollama", "openai")


class JudgeError(GPT2CoreError, RuntimeError):
    """The judge server could not be reached or answered something unexpected."""


@dataclass(frozen=True)
class JudgeClient:
    """Sends one user message to a local chat server and returns its reply."""

    url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"
    api: str = "ollama"
    timeout: float = 60.0
    seed: int = 123
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {self.api!r}")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"judge url must look like http://127.0.0.1:11434, got {self.url!r}")
        if parts.hostname not in LOCAL_HOSTS and not self.allow_remote:
            raise ValueError(f"judge host {parts.hostname!r} is not local; pass allow_remote=True "
                             "to send the test data to another machine")

    def request(self, content: str) -> tuple[str, dict]:
        """The endpoint and JSON body that ask the judge `content`."""
        messages = [{"role": "user", "content": content}]
        base = self.url.rstrip("/")
        if self.api == "ollama":
            return f"{base}/api/chat", {"model": self.model, "messages": messages, "stream": False,
                                        "options": {"temperature": 0, "seed": self.seed}}
        return f"{base}/v1/chat/completions", {"model": self.model, "messages": messages,
                                               "temperature": 0, "seed": self.seed}

    def chat(self, content: str) -> str:
        """Send one user message; return the judge's reply text."""
        endpoint, body = self.request(content)
        req = urllib.request.Request(endpoint, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:   # reached; the body says why (model not pulled...)
            detail = e.read().decode("utf-8", errors="replace").strip()[:200]
            raise JudgeError(f"judge at {endpoint} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise JudgeError(f"judge at {endpoint} is not reachable ({e})") from e
        except ValueError as e:               # not UTF-8 (UnicodeDecodeError) or not JSON
            raise JudgeError(f"judge at {endpoint} did not answer JSON ({e})") from e
        try:
            if self.api == "ollama":
                return reply["message"]["content"]
            return reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"unexpected {self.api} reply from {endpoint}: "
                             f"{json.dumps(reply)[:200]}") from None
