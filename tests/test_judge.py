"""gpt2_core.judge: JudgeClient against local servers that implement the documented chat APIs.

Ollama, POST /api/chat (https://docs.ollama.com/api/chat; docs/api.md of github.com/ollama/ollama,
"Generate a chat completion"): the body needs "model" and "messages" (each {"role", "content"},
role one of system, user, assistant, tool); "options" holds model parameters such as
temperature and seed; "stream" defaults to true (a stream of JSON lines), and with
"stream": false the answer is one object {"model", "created_at", "message": {"role":
"assistant", "content"}, "done": true, ...}. Errors (https://docs.ollama.com/api/errors): a
status code, e.g. 400 or 404 (model doesn't exist) or 500, and the body {"error": "..."}.

OpenAI-compatible servers (llama.cpp's llama-server, vLLM), POST /v1/chat/completions
(https://platform.openai.com/docs/api-reference/chat/create): the body needs "model" and
"messages"; "temperature" (0 to 2), "seed" (an integer) and "stream" (default false) are
optional. The answer: {"id", "object": "chat.completion", "created", "model", "choices":
[{"index", "message": {"role": "assistant", "content"}, "finish_reason"}], "usage"}; errors
carry {"error": {"message", "type", "param", "code"}}.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt2_core import instruct
from gpt2_core.judge import JudgeClient, JudgeError

PULLED = "judge-model"          # the one model the fake servers have
CRASHES = "crashing-model"      # a model whose runner fails (Ollama answers 500)
REPLY = "Score: 85 out of 100"
ROLES = ("system", "user", "assistant", "tool")


def request_problem(body, openai: bool) -> str | None:
    """What the documented API would reject in `body`, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for m in messages:
        if (not isinstance(m, dict) or m.get("role") not in ROLES
                or not isinstance(m.get("content"), str)):
            return f"invalid message {m!r}"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream must be a boolean"
    settings = body if openai else body.get("options", {})
    if not isinstance(settings, dict):
        return "options must be an object"
    if "temperature" in settings and not (isinstance(settings["temperature"], (int, float))
                                          and 0 <= settings["temperature"] <= 2):
        return "temperature must be a number in [0, 2]"
    seed = settings.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return "seed must be an integer"
    return None


class ChatServer(BaseHTTPRequestHandler):
    """Ollama's /api/chat and the OpenAI-compatible /v1/chat/completions, as documented above.

    Under /webui it is a web page (HTML for every path), under /health a llama.cpp health check
    ({"status": "ok"} for every path): right host, wrong address."""

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.path = self.requestline.split()[1]     # as sent: http.server collapses a leading //
        self.server.seen.append({"method": "POST", "path": self.path, "raw": raw,
                                 "content_type": self.headers.get("Content-Type")})
        if "//" in self.path:                       # like Go's ServeMux (Ollama): to the clean path
            self.send_response(301)
            self.send_header("Location", "/" + "/".join(p for p in self.path.split("/") if p))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/webui/"):
            self.answer(200, b"<!doctype html><title>Open WebUI</title>", "text/html")
        elif self.path.startswith("/binary/"):
            self.answer(200, b"\x1f\x8b\x08\x00\xff\xfe gzip, not JSON", "application/octet-stream")
        elif self.path.startswith("/health/"):
            self.answer_json(200, {"status": "ok"})
        elif self.path == "/api/chat":
            self.ollama(raw)
        elif self.path == "/v1/chat/completions":
            self.openai(raw)
        else:
            self.answer(404, b"404 page not found", "text/plain")

    def do_GET(self):
        self.server.seen.append({"method": "GET", "path": self.path})
        self.answer(405, b"405 method not allowed", "text/plain")

    def ollama(self, raw):
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.answer_json(400, {"error": f"invalid JSON: {e}"})
        problem = request_problem(body, openai=False)
        if problem:
            return self.answer_json(400, {"error": problem})
        if body["model"] == CRASHES:
            return self.answer_json(500, {"error": "the model failed to generate a response"})
        if body["model"] != PULLED:
            return self.answer_json(404, {"error": f"model '{body['model']}' not found"})
        final = {"model": PULLED, "created_at": "2023-12-12T14:13:43.416799Z",
                 "message": {"role": "assistant", "content": REPLY}, "done_reason": "stop",
                 "done": True, "total_duration": 5191566416, "load_duration": 2154458,
                 "prompt_eval_count": 26, "prompt_eval_duration": 383809000, "eval_count": 9,
                 "eval_duration": 4799921000}
        if body.get("stream", True):            # the default: one JSON object per line
            words = [{"model": PULLED, "created_at": final["created_at"],
                      "message": {"role": "assistant", "content": w}, "done": False}
                     for w in REPLY.split()]
            final["message"]["content"] = ""
            lines = "".join(json.dumps(chunk) + "\n" for chunk in [*words, final])
            return self.answer(200, lines.encode(), "application/x-ndjson")
        self.answer_json(200, final)

    def openai(self, raw):
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.openai_error(400, f"invalid JSON: {e}", None)
        problem = request_problem(body, openai=True)
        if problem:
            return self.openai_error(400, problem, None)
        if body["model"] != PULLED:
            return self.openai_error(404, f"The model `{body['model']}` does not exist.",
                                     "model_not_found")
        if body.get("stream", False):           # server-sent events
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": REPLY}, "finish_reason": "stop"}]}
            events = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            return self.answer(200, events.encode(), "text/event-stream")
        self.answer_json(200, {
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1741569952,
            "model": PULLED,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 9, "total_tokens": 28}})

    def openai_error(self, status, message, code):
        self.answer_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                            "param": None, "code": code}})

    def answer_json(self, status, obj):
        self.answer(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def answer(self, status, payload, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A running ChatServer: (its base url, the list of requests it received)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_the_fake_servers_follow_the_documented_apis(server):
    """The fake itself: what a client that forgets "stream": false or the model gets back."""
    import urllib.error
    import urllib.request

    url, _ = server

    def post(path, body):
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    messages = [{"role": "user", "content": "hi"}]
    status, text = post("/api/chat", {"model": PULLED, "messages": messages})
    assert status == 200 and len(text.splitlines()) == len(REPLY.split()) + 1   # streamed
    assert post("/api/chat", {"messages": messages}) == (400, '{"error": "model is required"}')
    status, text = post("/v1/chat/completions", {"model": "other", "messages": messages})
    assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("base", ["", "/"])
def test_ollama_request_and_reply(server, base):
    url, seen = server
    client = JudgeClient(url=url + base, model=PULLED, api="ollama", seed=7)
    assert client.chat("Rate this answer.") == REPLY
    [request] = seen
    assert request["method"] == "POST" and request["path"] == "/api/chat"
    assert request["content_type"] == "application/json"
    body = json.loads(request["raw"])
    assert body == {"model": PULLED, "messages": [{"role": "user", "content": "Rate this answer."}],
                    "stream": False, "options": {"temperature": 0, "seed": 7}}


def test_openai_request_and_reply(server):
    url, seen = server
    client = JudgeClient(url=url, model=PULLED, api="openai")
    assert client.chat("Rate this answer.") == REPLY
    [request] = seen
    assert request["method"] == "POST" and request["path"] == "/v1/chat/completions"
    assert request["content_type"] == "application/json"
    body = json.loads(request["raw"])
    assert body["model"] == PULLED and body.get("stream", False) is False
    assert body["messages"] == [{"role": "user", "content": "Rate this answer."}]
    assert body["temperature"] == 0 and body["seed"] == 123       # deterministic decoding


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_judge_score_asks_without_the_prompt_header(server, api):
    url, seen = server
    entry = {"instruction": "Name a colour.", "input": "sky", "output": "Blue."}
    assert instruct.judge_score(JudgeClient(url=url, model=PULLED, api=api), entry, "Red.") == 85
    [message] = json.loads(seen[0]["raw"])["messages"]
    assert message["role"] == "user" and instruct.PROMPT_HEADER not in message["content"]
    for part in ("Name a colour.", "sky", "Blue.", "Red."):
        assert part in message["content"]


@pytest.mark.parametrize("api, model, status, says", [
    ("ollama", "not-pulled", 404, "model 'not-pulled' not found"),
    ("ollama", CRASHES, 500, "the model failed to generate a response"),
    ("openai", "not-pulled", 404, "The model `not-pulled` does not exist."),
])
def test_an_error_status_gives_the_servers_own_message(server, api, model, status, says):
    url, _ = server
    with pytest.raises(JudgeError, match=rf"answered HTTP {status}: .*{says}") as info:
        JudgeClient(url=url, model=model, api=api).chat("hello")
    assert "not reachable" not in str(info.value)                 # it was reached


@pytest.mark.parametrize("prefix", ["/webui", "/binary"])
def test_a_reply_that_is_not_json(server, prefix):
    url, _ = server
    with pytest.raises(JudgeError, match=rf"judge at {url}{prefix}/api/chat did not answer JSON"):
        JudgeClient(url=url + prefix, model=PULLED).chat("hello")


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_json_that_is_not_a_chat_reply(server, api):
    url, _ = server
    with pytest.raises(JudgeError, match=rf'unexpected {api} reply from .*: {{"status": "ok"}}'):
        JudgeClient(url=url + "/health", model=PULLED, api=api).chat("hello")


def test_connection_refused_is_not_reachable():
    with socket.socket() as s:               # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeError, match=rf"judge at http://127.0.0.1:{port}/api/chat is not "
                                         r"reachable \(.*[Cc]onnection refused"):
        JudgeClient(url=f"http://127.0.0.1:{port}", timeout=5).chat("hello")


def test_remote_hosts_bad_urls_and_unknown_apis_are_refused():
    with pytest.raises(ValueError, match="not local"):
        JudgeClient(url="http://judge.example.com:8080")
    JudgeClient(url="http://judge.example.com:8080", allow_remote=True)
    with pytest.raises(ValueError, match="must look like"):
        JudgeClient(url="127.0.0.1:11434")
    with pytest.raises(ValueError, match="api must be one of"):
        JudgeClient(api="anthropic")
