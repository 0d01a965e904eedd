"""One service of `make stack` in the foreground, restarted when it dies (a Procfile line runs `run`).

In: a service's command, its stop signal and ports, and the stack's run directory. Out: the running service;
under `<run dir>/` its pid (`<service>.pid`), its process tree as last seen (`<service>.tree`: pid and
creation time, since a pid alone can be reused) and, while held, `<service>.hold`. Process trees come from
psutil; before each start what is left of the earlier tree is SIGKILLed (by pid and creation time, never by
name), and a port another program holds is waited for rather than crash-looped on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

STOP_WAIT_S = 30.0  # a child runs in its own session: honcho's SIGKILL of its supervisor never reaches it
RECORD_EVERY_S = 2.0


@dataclass(frozen=True)
class Slot:
    """Where one service's supervisor keeps its files."""

    run_dir: Path
    service: str

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.service}.pid"

    @property
    def tree_file(self) -> Path:
        return self.run_dir / f"{self.service}.tree"

    @property
    def hold_file(self) -> Path:
        return self.run_dir / f"{self.service}.hold"


def become_subreaper() -> None:
    """Orphans of this supervisor's child (bentoml's workers after a SIGKILL of `bentoml serve`) are
    re-parented to this process instead of PID 1, so they stay in its process tree (Linux prctl)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # not Linux: the recorded tree still finds them
        pass


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stamp(proc: psutil.Process) -> tuple[int, float] | None:
    try:
        return proc.pid, proc.create_time()
    except psutil.Error:
        return None


def alive(pid: int, created: float) -> bool:
    """Process `pid` exists, is not a zombie, and is the one created at `created` (not a reused pid)."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _recorded(slot: Slot) -> set[tuple[int, float]]:
    path = slot.tree_file
    return {tuple(entry) for entry in json.loads(path.read_text())} if path.exists() else set()


def record_tree(slot: Slot, pid: int) -> None:
    """Remember `pid`, every process under it and the orphans re-parented to this supervisor."""
    members = _tree(pid) + _tree(os.getpid())[1:]
    seen = {stamp for p in members if (stamp := _stamp(p)) and alive(*stamp)}
    still = {entry for entry in _recorded(slot) if alive(*entry)}
    # Written aside then renamed: `make stop` reads it while the supervisor rewrites it every 2 s (a read of
    # the truncated file failed `down` with JSONDecodeError in the e2e teardown).
    partial = slot.tree_file.with_suffix(".tree.partial")
    partial.write_text(json.dumps(sorted(seen | still)))
    os.replace(partial, slot.tree_file)


def reap(keep: int | None = None) -> None:
    """Collect exited orphans re-parented to this supervisor (subreaper), so none stays a zombie; not
    `keep` (the service's own process, whose exit status Popen collects)."""
    for child in psutil.Process().children():
        try:
            if child.pid != keep and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def kill_tree(slot: Slot, adopted: bool = False, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of the service's recorded tree still alive (and, from its supervisor, the
    orphans it adopted); wait until they are gone. The pids killed."""
    mine = {stamp for p in _tree(os.getpid())[1:] if (stamp := _stamp(p))} if adopted else set()
    targets = [entry for entry in _recorded(slot) | mine if alive(*entry)]
    for pid, _created in targets:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(alive(*target) for target in targets) and time.monotonic() < deadline:
        reap()
        time.sleep(0.1)
    reap()
    slot.tree_file.unlink(missing_ok=True)
    return [pid for pid, _created in targets]


def port_holders(port: int) -> list[int]:
    """Pids listening on `port` (127.0.0.1 or all interfaces)."""
    held = {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid
    }
    return sorted(held)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def clear_orphans(slot: Slot, ports: Sequence[int]) -> bool:
    """Before (re)starting the service: kill what is left of its earlier process tree. True once its ports
    are free; False (said once a wait) when another program holds one."""
    killed = kill_tree(slot, adopted=True)
    if killed:
        print(f"{slot.service}: stopped {len(killed)} leftover process(es) of its tree: {killed}", flush=True)
    busy = [port for port in ports if not port_free(port)]
    for port in busy:
        print(
            f"{slot.service}: port {port} held by pid(s) {port_holders(port)}, not this service's", flush=True
        )
    return not busy


def stop_child(child: subprocess.Popen, sig: int) -> None:
    """`sig` to the child's process group; SIGKILL after STOP_WAIT_S."""
    try:
        os.killpg(child.pid, sig)
        child.wait(timeout=STOP_WAIT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _watch(slot: Slot, child: subprocess.Popen, stopping: Callable[[], bool]) -> None:
    """Wait while `child` runs, recording its process tree and reaping adopted orphans every 2 s."""
    recorded = 0.0
    while child.poll() is None and not stopping():
        if time.monotonic() - recorded >= RECORD_EVERY_S:
            recorded = time.monotonic()
            try:
                record_tree(slot, child.pid)
                reap(keep=child.pid)
            except Exception as exc:  # noqa: BLE001 - a process gone between two reads: next time
                print(f"{slot.service}: process tree not recorded ({exc})", flush=True)
        time.sleep(0.2)


@dataclass
class Launch:
    """What `supervise` starts: the command, where, with which environment, and how it is stopped."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    stop_signal: int = signal.SIGTERM
    ports: tuple[int, ...] = ()


def supervise(slot: Slot, prepare: Callable[[], Launch]) -> int:
    """Run the service in the foreground: `prepare` waits for what it needs and says how to start it;
    restart it when it dies, unless held. SIGTERM/SIGINT stop it with its stop signal."""
    slot.run_dir.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    state: dict[str, object] = {"stopping": False, "child": None, "signal": signal.SIGTERM}

    def stop(_signum: int, _frame: object) -> None:
        state["stopping"] = True
        child = state["child"]
        if child is None:  # still waiting for what the service needs
            raise SystemExit(0)
        if child.poll() is None:
            stop_child(child, state["signal"])

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    launch = prepare()
    state["signal"] = launch.stop_signal
    while not state["stopping"]:
        if slot.hold_file.exists() or not clear_orphans(slot, launch.ports):
            time.sleep(0.2 if slot.hold_file.exists() else 2)
            continue
        child = subprocess.Popen(launch.command, cwd=launch.cwd, env=launch.env, start_new_session=True)
        state["child"] = child
        slot.pid_file.write_text(str(child.pid))
        _watch(slot, child, lambda: bool(state["stopping"]))
        if state["stopping"]:
            break
        print(f"{slot.service} exited with {child.returncode}; restarting", flush=True)
        time.sleep(1)
    kill_tree(slot, adopted=True)
    slot.pid_file.unlink(missing_ok=True)
    return 0


def hold(slot: Slot) -> None:
    """Stop the service (SIGKILL of it and every process under it: a crash) and keep it down until
    `release`."""
    slot.hold_file.touch()
    if not slot.pid_file.exists():
        return
    pid = int(slot.pid_file.read_text())
    tree = [p.pid for p in _tree(pid)]
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def release(slot: Slot) -> None:
    slot.hold_file.unlink(missing_ok=True)


def restart(slot: Slot, sig: int) -> None:
    """Stop the service cleanly with `sig`; its supervisor starts it again."""
    os.killpg(int(slot.pid_file.read_text()), sig)
