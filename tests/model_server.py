"""A scripted model server for the agent CLI tests (test_agent_templates.py):
it speaks just enough of Anthropic's Messages API (what `claude` calls) and
of OpenAI's Responses API (what `codex` calls), streaming server-sent
events as the CLIs ask, and plays a fixed script instead of a model:

  1. the first turn asks for a tool call that writes SCRIPT_PATH;
  2. the second (once the first call's result came back) asks for one
     that runs SCRIPT_CMD in the workspace;
  3. the third answers with text, FINAL_TEXT, and the CLI ends.

It also serves one npm package, a small registry's packument and tarball
(GET /npm/sbxd-hello and /npm/sbxd-hello/-/sbxd-hello-1.0.0.tgz), so
that a sandbox can `npm install` through its network without the real
registry.

Every request is appended to LOG_DIR/requests.jsonl (method, path,
headers, body) so the test can check what the CLI sent, such as the key it
was given and the tool results it returned.

    python3 model_server.py ADDR PORT LOG_DIR

It writes LOG_DIR/ready once it listens.
"""
import base64
import hashlib
import http.server
import io
import json
import os
import sys
import tarfile
import threading

SCRIPT_DIR = "/home/user/workspace"
SCRIPT_PATH = SCRIPT_DIR + "/hello.py"
SCRIPT_BODY = 'import sys\nprint("sum", 6 * 7, sys.argv[1])\n'
SCRIPT_CMD = "cd /home/user/workspace && python3 hello.py {tag} > result.txt && cat result.txt"
FINAL_TEXT = "All done: result.txt written."

LOG_LOCK = threading.Lock()


def npm_package():
    """The tarball of sbxd-hello 1.0.0, made the same way every time."""
    files = {
        "package/package.json": json.dumps({"name": "sbxd-hello", "version": "1.0.0", "main": "index.js"}),
        "package/index.js": 'module.exports = () => "hello from the npm peer";\n',
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


TARBALL = npm_package()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def record(self, body):
        entry = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
        with LOG_LOCK, open(os.path.join(self.server.log_dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def send(self, code, body, ctype="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def sse(self, events, named=True):
        """Send EVENTS, (name, data) pairs, as one event stream."""
        out = b""
        for name, data in events:
            if named:
                out += b"event: " + name.encode() + b"\n"
            out += b"data: " + json.dumps(data).encode() + b"\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    # ---------------------------------------------------------------- GET
    def do_GET(self):
        self.record(None)
        host = self.headers.get("Host", "")
        if self.path == "/npm/sbxd-hello":
            sha512 = base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()
            url = f"http://{host}/npm/sbxd-hello/-/sbxd-hello-1.0.0.tgz"
            self.send(200, {"name": "sbxd-hello", "dist-tags": {"latest": "1.0.0"},
                            "versions": {"1.0.0": {"name": "sbxd-hello", "version": "1.0.0", "main": "index.js",
                                                   "dist": {"tarball": url, "integrity": "sha512-" + sha512,
                                                            "shasum": hashlib.sha1(TARBALL).hexdigest()}}}})
        elif self.path == "/npm/sbxd-hello/-/sbxd-hello-1.0.0.tgz":
            self.send(200, TARBALL, "application/octet-stream")
        elif self.path.split("?")[0].rstrip("/").endswith("/models"):
            self.send(200, {"object": "list", "data": [], "models": []})
        else:
            self.send(404, {"error": {"type": "not_found_error", "message": "not found"}})

    # ---------------------------------------------------------------- POST
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode("latin-1")[:2000]}
        self.record(body)
        path = self.path.split("?")[0]
        if path.endswith("/messages/count_tokens"):
            self.send(200, {"input_tokens": 100})
        elif path.endswith("/messages"):
            self.anthropic(body)
        elif path.endswith("/responses"):
            self.openai(body)
        else:
            self.send(404, {"error": {"type": "not_found_error", "message": "not found"}})

    # ------------------------------------------------- Anthropic Messages
    def anthropic(self, body):
        tools = {t.get("name") for t in body.get("tools") or []}
        results = [c for m in body.get("messages", []) if m.get("role") == "user" and isinstance(m.get("content"), list)
                   for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result"]
        tag = self.server.tag
        if "Write" in tools and "Bash" in tools and len(results) == 0:
            block = {"type": "tool_use", "id": "toolu_01write", "name": "Write",
                     "input": {"file_path": SCRIPT_PATH, "content": SCRIPT_BODY}}
        elif "Write" in tools and "Bash" in tools and len(results) == 1:
            block = {"type": "tool_use", "id": "toolu_02bash", "name": "Bash",
                     "input": {"command": SCRIPT_CMD.format(tag=tag), "description": "Run hello.py"}}
        else:
            # the last turn, and any side request (a title, a summary)
            block = {"type": "text", "text": FINAL_TEXT}
        stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
        msg = {"id": "msg_%d" % len(results), "type": "message", "role": "assistant",
               "model": body.get("model", "claude"), "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0}}
        if not body.get("stream"):
            msg.update(content=[block], stop_reason=stop)
            self.send(200, msg)
            return
        if block["type"] == "tool_use":
            start = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        self.sse([
            ("message_start", {"type": "message_start", "message": msg}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": 20}}),
            ("message_stop", {"type": "message_stop"}),
        ])

    # --------------------------------------------------- OpenAI Responses
    def openai(self, body):
        # Tools come in "tools" (function tools), or, from Codex 0.1xx on,
        # in an "additional_tools" input item as namespaces; Codex's code
        # mode offers one custom tool, "exec", that runs JavaScript whose
        # `tools` object calls the rest (apply_patch, exec_command).
        tools = {}

        def collect(ts):
            for t in ts or []:
                if t.get("type") == "namespace":
                    collect(t.get("tools"))
                else:
                    tools[t.get("name") or t.get("type")] = t
        collect(body.get("tools"))
        for i in body.get("input") or []:
            if isinstance(i, dict) and i.get("type") == "additional_tools":
                collect(i.get("tools"))
        outputs = [i for i in body.get("input") or []
                   if isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")]
        n = len(outputs)
        run = SCRIPT_CMD.format(tag=self.server.tag)
        item = None
        if n < 2 and tools.get("exec", {}).get("type") == "custom":
            if n == 0:
                patch = "*** Begin Patch\n*** Add File: %s\n%s*** End Patch\n" % (
                    SCRIPT_PATH, "".join("+" + line + "\n" for line in SCRIPT_BODY.splitlines()))
                js = "const r = await tools.apply_patch(%s);\ntext(r);\n" % json.dumps(patch)
            else:
                js = ("const r = await tools.exec_command({cmd: %s, workdir: %s});\n"
                      "text(r.output);\n" % (json.dumps(run), json.dumps(SCRIPT_DIR)))
            item = {"type": "custom_tool_call", "name": "exec", "input": js}
        elif n < 2:
            cmd = "cat > %s <<'EOF'\n%sEOF" % (SCRIPT_PATH, SCRIPT_BODY) if n == 0 else run
            if "shell_command" in tools:
                item = {"type": "function_call", "name": "shell_command",
                        "arguments": json.dumps({"command": cmd, "workdir": SCRIPT_DIR})}
            elif "exec_command" in tools:
                item = {"type": "function_call", "name": "exec_command",
                        "arguments": json.dumps({"cmd": cmd, "workdir": SCRIPT_DIR})}
            elif "shell" in tools:
                item = {"type": "function_call", "name": "shell",
                        "arguments": json.dumps({"command": ["bash", "-lc", cmd], "workdir": SCRIPT_DIR})}
        if item is not None:
            item.update(id="fc_%d" % n, call_id="call_%d" % n, status="completed")
        else:
            item = {"type": "message", "id": "msg_%d" % n, "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": FINAL_TEXT, "annotations": []}]}
        base = {"id": "resp_%d" % n, "object": "response", "created_at": 1, "model": body.get("model", "gpt"),
                "status": "in_progress", "output": []}
        done = dict(base, status="completed", output=[item],
                    usage={"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
                           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 30})
        if not body.get("stream"):
            self.send(200, done)
            return
        events = [
            ("response.created", {"type": "response.created", "sequence_number": 0, "response": base}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                            "output_index": 0, "item": item}),
        ]
        if item["type"] == "message":
            events.append(("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 2,
                                                          "item_id": item["id"], "output_index": 0,
                                                          "content_index": 0, "delta": FINAL_TEXT}))
        events += [
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": 3,
                                           "output_index": 0, "item": item}),
            ("response.completed", {"type": "response.completed", "sequence_number": 4, "response": done}),
        ]
        self.sse(events)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    addr, port, log_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    srv = Server((addr, port), Handler)
    srv.log_dir = log_dir
    # a word the run command prints, so the test knows it was this run's
    srv.tag = os.environ.get("MODEL_TAG", "tag")
    open(os.path.join(log_dir, "ready"), "w").close()
    srv.serve_forever()


if __name__ == "__main__":
    main()
