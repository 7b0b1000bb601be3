"""Debian's nginx as a plain reverse proxy in front of one container: what a user would put
in front of containers.  One worker process by default (the gateway under test is one process
too; the warm section also runs both with two),
keep-alive to the upstream, access log off, everything else at nginx's defaults; the config
and temp files live in a temporary directory and it listens on 127.0.0.1 only."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

CONF = """worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream fn {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, directory: str, upstream_port: int, port: int, workers: int = 1):
        self.dir, self.upstream_port, self.port, self.workers = directory, upstream_port, port, workers
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> str:
        return CONF.format(dir=self.dir, upstream=self.upstream_port, port=self.port, workers=self.workers)

    def start(self) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not binary:
            raise RuntimeError("nginx is not installed (Debian package `nginx-light`; scripts/setup.sh installs it)")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # workers may run as nobody
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(self.config)
        self.proc = subprocess.Popen([binary, "-e", os.path.join(self.dir, "error.log"), "-p", self.dir, "-c", path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode(errors='replace')[-400:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening in 10 s")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
