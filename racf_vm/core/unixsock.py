"""Is a daemon listening on a unix socket? One way to ask (doctor, the node advertiser)."""

import socket


def socket_status(path: str, timeout: float = 2.0) -> str:
    """"answers", "down" (no socket file, or nothing accepts on it) or "unknown" (we may
    not connect, e.g. a root-only socket asked by an unprivileged user)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return "answers"
    except PermissionError:
        return "unknown"
    except OSError:  # ENOENT, ECONNREFUSED, a timeout
        return "down"
    finally:
        s.close()


def socket_answers(path: str, timeout: float = 2.0) -> bool:
    """True when something accepts a connection on the unix socket ``path`` within ``timeout``."""
    return socket_status(path, timeout) == "answers"
