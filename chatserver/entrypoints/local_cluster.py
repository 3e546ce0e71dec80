"""`chatserver cluster`: N nodes and nginx in front of them on one port, on this machine.

For demos and tests. Ctrl+C (SIGINT) or SIGTERM stops nginx, then each node cleanly.
"""

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from attrs import define, field

from chatserver.adapters.mysql.url import redact_password as redact
from chatserver.entrypoints.bootstrap import ConfigError

log = logging.getLogger("chatserver.cluster")

# Nodes listen here, whatever address nginx listens on: nothing but nginx needs to reach them.
NODE_HOST = "127.0.0.1"
# The folder of files shared in chats, with --ws-port and a database other than SQLite.
DEFAULT_FILES = "chatserver-files"

NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

# The same settings as deploy/nginx/chatserver.conf, which README explains.
NGINX_CONFIG = """\
{load_module}
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;
events {{ worker_connections 20000; }}
stream {{
    upstream chatserver {{
        least_conn;
{servers}
    }}
    server {{
        listen {host}:{port} so_keepalive=60s:10s:6;
        proxy_pass chatserver;
        proxy_connect_timeout 1s;
        # Clients of the original server never PING and may sit silent for hours: the nodes
        # close silent modern clients themselves, and TCP keepalive finds dead peers.
        proxy_timeout 7d;
        proxy_socket_keepalive on;
        tcp_nodelay on;
        # Each connection starts with a PROXY header naming the client (nodes run with
        # --proxy-protocol), so their limits per address see real addresses, not nginx's.
        proxy_protocol on;
    }}
}}
{http}"""

# With --ws-port: the web page and /ws through nginx's http proxy, WebSocket upgrades passed on.
NGINX_HTTP_CONFIG = """\
http {{
    access_log off;
    client_body_temp_path {run_dir}/client-body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    upstream chatserver_web {{
        least_conn;
{servers}
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://chatserver_web;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            # Replaced, not appended: the nodes take the last address as the client's.
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_connect_timeout 1s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
        # Files go up and come down here (their links are paths on this origin). Bodies of any
        # size are passed on: a node refuses a PUT whose Content-Length is not the size its
        # FILE_UPLOAD granted (within --file-limit) before reading it. Both ways stream,
        # neither kept whole in nginx's memory or temporary files first.
        location /files/ {{
            proxy_pass http://chatserver_web;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_connect_timeout 1s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
}}
"""


def nginx_config(run_dir: Path, node_ports: Sequence[int], host: str, port: int,
                 web_ports: Sequence[int] = (), ws_port: int = 0) -> str:
    """nginx's configuration: the nodes' chat ports behind host:port (PROXY headers on), and
    with ws_port their web ports (page, /ws, files) behind host:ws_port."""
    servers = "\n".join(
        f"        server {NODE_HOST}:{node} max_fails=3 fail_timeout=10s;" for node in node_ports
    )
    load = f"load_module {NGINX_STREAM_MODULE};" if NGINX_STREAM_MODULE.exists() else ""
    http = ""
    if ws_port:
        web_servers = "\n".join(
            f"        server {NODE_HOST}:{node} max_fails=3 fail_timeout=10s;"
            for node in web_ports
        )
        http = NGINX_HTTP_CONFIG.format(run_dir=run_dir, servers=web_servers, host=host,
                                        port=ws_port)
    return NGINX_CONFIG.format(load_module=load, run_dir=run_dir, servers=servers, host=host,
                               port=port, http=http)


def start_nginx(run_dir: Path, config: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground with this configuration, its files in run_dir."""
    path = run_dir / "nginx.conf"
    path.write_text(config)
    return subprocess.Popen([
        "nginx", "-c", str(path), "-p", str(run_dir), "-e", str(run_dir / "nginx-error.log"),
        "-g", "daemon off;",
    ], start_new_session=True)  # stopped by run(), gracefully, not by a terminal's Ctrl+C


@define
class LocalCluster:
    nodes: int
    port: int
    database: str
    bus: str
    host: str = "127.0.0.1"
    first_node_port: int = 0  # 0: the ports right after port
    # The web page and WebSocket through nginx on this port; the nodes' own web ports follow
    # their TCP ports. 0: off.
    ws_port: int = 0
    # Where the nodes keep files shared in chats (with ws_port): one folder for all of them,
    # which they share on this machine. None: beside a SQLite database, as `serve` does, else
    # DEFAULT_FILES in the current folder.
    files: str | None = None
    file_key: str = field(factory=lambda: secrets.token_hex(32), repr=False)

    def files_folder(self) -> str | None:
        """What the nodes get as --files: None where `serve`'s default (beside a SQLite
        database) is the one folder they share."""
        if self.files is not None:
            return self.files
        if not self.ws_port or self.database.startswith("sqlite:///"):
            return None
        return str(Path(DEFAULT_FILES).resolve())

    def node_ports(self) -> list[int]:
        first = self.first_node_port or self.port + 1
        return list(range(first, first + self.nodes))

    def node_web_ports(self) -> list[int]:
        if not self.ws_port:
            return []
        return [port + self.nodes for port in self.node_ports()]

    def check(self) -> None:
        if not self.bus.startswith("redis://"):
            raise ConfigError("a cluster needs a shared bus: --bus redis://HOST:PORT/DB")
        if self.database == "memory://":
            raise ConfigError("a cluster needs a shared database: mysql://... or sqlite:///FILE")
        if shutil.which("nginx") is None:
            raise ConfigError(
                "nginx is not installed: apt-get install -y nginx-light libnginx-mod-stream"
            )

    def run(self) -> int:
        """Start everything, wait for SIGINT or SIGTERM, stop everything; 0 if all went well."""
        self.check()
        stop = _StopSignal()
        with tempfile.TemporaryDirectory(prefix="chatserver-cluster-") as run_dir:
            nodes = [self._start_node(i, port, Path(run_dir)) for i, port in
                     enumerate(self.node_ports(), 1)]
            nginx: subprocess.Popen[bytes] | None = None
            try:
                for port in self.node_ports() + self.node_web_ports():
                    _wait_listening(NODE_HOST, port, processes=nodes)
                nginx = self._start_nginx(Path(run_dir))
                _wait_listening(self.host, self.port)
                if self.ws_port:
                    _wait_listening(self.host, self.ws_port)
                    log.info("web page at http://%s:%d/ (WebSocket at /ws)", self.host,
                             self.ws_port)
                log.info("cluster listening on %s:%d: %d nodes on ports %s, database %s, bus %s",
                         self.host, self.port, self.nodes, self.node_ports(),
                         redact(self.database), redact(self.bus))
                while not stop.received:
                    for node in [n for n in nodes if n.poll() is not None]:
                        log.warning("node pid %d exited with %s", node.pid, node.returncode)
                        nodes.remove(node)
                    time.sleep(0.2)
            finally:
                if nginx is not None:
                    nginx.send_signal(signal.SIGQUIT)  # graceful: lets nodes see their clients go
                    _wait(nginx, 5)
                for node in nodes:
                    node.send_signal(signal.SIGTERM)
                failures = sum(_wait(node, 15) != 0 for node in nodes)
        log.info("cluster stopped")
        return 1 if failures else 0

    def node_command(self, index: int, port: int) -> list[str]:
        """A node's command line: on loopback whatever --host is (only nginx, on this machine,
        reaches it), believing PROXY headers and X-Forwarded-For from nginx only."""
        web = ["--ws-port", str(port + self.nodes)] if self.ws_port else []
        files = self.files_folder()
        if files is not None:
            web += ["--files", files]
        return [
            sys.executable, "-m", "chatserver", "serve", "--host", NODE_HOST,
            "--port", str(port), "--database", self.database, "--bus", self.bus,
            "--node-id", f"node{index}", "--proxy-protocol", "--trusted-proxy", NODE_HOST,
            *web,
        ]

    def _start_node(self, index: int, port: int, run_dir: Path) -> subprocess.Popen[bytes]:
        # One key signs the file links of every node (a link one node hands out is used on
        # whichever node nginx picks): CHATSERVER_FILE_KEY if set, else one for this run.
        env = dict(os.environ)
        env.setdefault("CHATSERVER_FILE_KEY", self.file_key)
        # A session of its own, as nginx's: Ctrl+C in a terminal signals the whole foreground
        # process group, and a node that got SIGINT from it and then SIGTERM from run() would
        # take the second signal as "stop at once", skipping its clean stop.
        return subprocess.Popen(self.node_command(index, port), env=env,
                                start_new_session=True)

    def _start_nginx(self, run_dir: Path) -> subprocess.Popen[bytes]:
        return start_nginx(run_dir, nginx_config(
            run_dir, self.node_ports(), self.host, self.port, self.node_web_ports(), self.ws_port
        ))


class _StopSignal:
    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = True


def _wait_listening(host: str, port: int, seconds: float = 20.0,
                    processes: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Until something listens on host:port; a ConfigError after seconds, or at once when one
    of processes (that should be listening) has exited: it said why on stderr."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            for process in processes:
                if process.poll() is not None:
                    raise ConfigError(f"a node exited with code {process.returncode} before "
                                      "it listened (its own line above says why)") from None
            time.sleep(0.1)
    raise ConfigError(f"nothing listens on {host}:{port} after {seconds:.0f} s")


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
