#!/usr/bin/env python3
"""A git smart-HTTP server for berth's GitOps tests: `git http-backend` (CGI) behind a
small HTTP server that wants a token, as a git host does.

    git-http-server.py ROOT PORT TOKEN [CERT KEY]

Serves the repositories under ROOT on 127.0.0.1:PORT, over TLS (https) when a
certificate and its key are given. Every request must carry
`Authorization: Basic base64("x-access-token:" + TOKEN)` (what berth's --token-file
sends), or `base64(TOKEN)` when TOKEN is a `user:password` pair itself; anything else
gets 401. TOKEN `-` stands for the value of GIT_HTTP_SERVER_TOKEN in its environment
(kept out of this server's own command line). With GIT_HTTP_SERVER_DELAY=SECONDS in its environment, each answer waits that
long first (a slow remote: a fetch lasts long enough to look at it). Python's standard
library only.
"""
import base64
import http.server
import os
import subprocess
import sys
import time

ROOT, PORT, TOKEN = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if TOKEN == "-":
    TOKEN = os.environ["GIT_HTTP_SERVER_TOKEN"]
PAIR = TOKEN if ":" in TOKEN else f"x-access-token:{TOKEN}"
WANT = "Basic " + base64.b64encode(PAIR.encode()).decode()
DELAY = float(os.environ.get("GIT_HTTP_SERVER_DELAY") or 0)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.backend()

    def do_POST(self):
        self.backend()

    def backend(self):
        time.sleep(DELAY)
        if self.headers.get("Authorization") != WANT:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=ROOT,
            GIT_HTTP_EXPORT_ALL="1",
            PATH_INFO=path,
            QUERY_STRING=query,
            REQUEST_METHOD=self.command,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
            GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
            REMOTE_USER="berth",
            REMOTE_ADDR="127.0.0.1",
        )
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True
        ).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, rest = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
