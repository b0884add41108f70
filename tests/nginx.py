"""nginx from Debian's packages as an off-the-shelf rate-limiting proxy that sends no rate-limit
headers (issue 23's proxy case): started by the tests and by benchmarks/ray_bench.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Nginx:
    """nginx (Debian's package) on a free port: limit_req at 30 r/s with a burst of 30, refusals
    answered 429 with no rate-limit header, in front of `upstream`. The limit is keyed by the
    client's address: every client here is 127.0.0.1, so it is one limit for all of them (a key
    nginx finds empty, such as an unnamed server's `$server_name`, would limit nothing)."""

    CONFIG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    limit_req_zone $binary_remote_addr zone=api:1m rate={rate}r/s;
    upstream simulator {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=api burst={burst} nodelay;
            limit_req_status 429;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://simulator;
        }}
    }}
}}
"""

    def __init__(self, upstream: str, rate: int = 30, burst: int = 30):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is missing and cannot be installed here (needs root and apt-get)")
        self.dir = tempfile.mkdtemp(prefix="nginx-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = Path(self.dir) / "nginx.conf"
        settings = {"dir": self.dir, "rate": rate, "burst": burst, "upstream": upstream, "port": port}
        config.write_text(self.CONFIG.format(**settings))
        self.process = subprocess.Popen([binary, "-c", str(config), "-p", self.dir])
        self.base_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def nginx_binary() -> str | None:
    """nginx's path, installed from Debian's nginx-light package where it is missing (as root)."""
    path = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx") or None
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
        path = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx") or None
    return path
