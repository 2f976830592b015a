"""A real multi-node Ray cluster on this machine, started with the ``ray`` CLI exactly as on cloud VMs:
``ray start --head --port P`` for the head and ``ray start --address 127.0.0.1:P`` for every further
node, each its own process tree (``--block``, own session) so a node can be killed with ``kill -9`` like a
lost VM. Every port is chosen free (other Ray instances on the machine are left alone) and the session
files live in a temp dir of this cluster. Used by the multi-node tests and ``benchmarks/bench_ray_cluster.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from qt_pipeline.evolution.ray_runtime import SLOW_MACHINE_ENV

RAY = str(Path(sys.executable).parent / "ray")
# Token authentication, as a cluster reachable over a network should run: one token per process (Ray
# caches it), given to every node and to this process's driver through the environment, so neither
# depends on a ~/.ray/auth_token another Ray on the machine may have written.
AUTH_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _startup_priority() -> None:
    # The raylet waits agent_register_timeout_ms for its dashboard agent (a Python process) to write its
    # port file, then aborts (ray-project/ray#65983). Besides the longer budget (SLOW_MACHINE_ENV), a node
    # starts at normal priority and is niced back (``_renice``) as soon as it is up.
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)


def _renice(node: RayNode) -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PGRP, node.proc.pid, os.getpriority(os.PRIO_PROCESS, 0))


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """``kill -9`` of the node's whole process tree (raylet, object store, its workers), as when a VM
        is lost. Ray puts each worker in a process group of its own, and an actor keeps answering calls
        (they do not go through the raylet) until it notices its raylet is gone: kill the tree, not
        only the node's process group."""
        import psutil

        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)


@dataclass
class LocalRayCluster:
    head_cpus: int = 1
    object_store_mb: int = 200
    nodes: list[RayNode] = field(default_factory=list)
    port: int = 0
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qtr_", dir="/tmp")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> RayNode:
        p = free_ports(8)
        common = [
            "--node-ip-address=127.0.0.1",
            f"--object-manager-port={p[0]}",
            f"--node-manager-port={p[1]}",
            f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}",
            f"--metrics-export-port={p[4]}",
            f"--runtime-env-agent-port={p[5]}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--block",
        ]
        log = self.temp_dir / f"{name}.log"
        # the raylet aborts when its dashboard agent (Python) is slower to start than
        # agent_register_timeout_ms (ray-project/ray#65983): under load nodes get the evaluator's budgets
        env = {**SLOW_MACHINE_ENV, **os.environ, **AUTH_ENV}
        proc = subprocess.Popen(
            [RAY, "start", *args, *common],
            stdout=open(log, "wb"),  # noqa: SIM115 - owned by the node process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: kill() takes the whole node down
            preexec_fn=_startup_priority,
        )
        node = RayNode(name, proc, log)
        self.nodes.append(node)
        return node

    def _start_and_wait(self, name: str, args_fn, alive: int, attempts: int = 5) -> RayNode:
        # `ray start` gives a raylet 30 s to register (hard-coded); on a heavily loaded machine that can
        # pass, and the node exits: start it again (a cloud node's supervisor would do the same)
        for attempt in range(1, attempts + 1):
            node = self._start(name, args_fn())
            try:
                self.wait_for(alive)
                _renice(node)
                return node
            except RuntimeError:
                self.nodes.remove(node)
                node.kill()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def start_head(self, num_cpus: int | None = None) -> RayNode:
        cpus = self.head_cpus if num_cpus is None else num_cpus

        def args() -> list[str]:
            self.port, client = free_ports(2)
            return [
                "--head",
                f"--port={self.port}",
                f"--ray-client-server-port={client}",
                f"--num-cpus={cpus}",
                "--include-dashboard=false",
            ]

        return self._start_and_wait("head", args, 1)

    def add_node(self, num_cpus: int) -> RayNode:
        """Start one more node and wait until the cluster reports it alive."""
        assert self.port, "start the head first"
        alive = len(self.nodes) + 1
        name = f"node{len(self.nodes)}"
        return self._start_and_wait(
            name, lambda: [f"--address={self.address}", f"--num-cpus={num_cpus}"], alive
        )

    def wait_for(self, alive_nodes: int, timeout_s: float = 300.0) -> None:
        """Block until the GCS reports ``alive_nodes`` alive nodes (asks the GCS over gRPC, no driver)."""
        from ray._raylet import GcsClient

        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc.poll() is not None:
                    raise RuntimeError(f"ray node {n.name} exited: {n.log.read_text()[-2000:]}")
            try:
                infos = GcsClient(address=self.address).get_all_node_info(timeout=5)
                alive = [i for i in infos.values() if i.state == 0]  # ALIVE
                if len(alive) >= alive_nodes:
                    return
                last = len(alive)
            except Exception as exc:  # GCS not up yet
                last = exc
            time.sleep(1.0)
        raise TimeoutError(
            f"ray cluster at {self.address}: {alive_nodes} nodes not alive after {timeout_s} s ({last})"
        )

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.kill()
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        os.environ.update(AUTH_ENV)  # the driver (this process) authenticates like the nodes
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
