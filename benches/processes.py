"""Process plumbing the Python benches share (idle.sh, scale.sh): a free
loopback port for a daemon, and stopping it the way an operator would."""

import signal
import socket
import subprocess


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop(proc, log, grace):
    """SIGTERM, then SIGKILL after `grace` seconds; closes the log."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
