"""CURVE authentication and encryption of the daemon's socket (ZeroMQ's CurveZMQ + ZAP).

The daemon holds a secret key file; the clients it admits are those whose public key file
lies in a directory. Key files are the ZeroMQ certificates ``zmq.auth.create_certificates``
writes (``NAME.key`` public, ``NAME.key_secret`` public + secret). A client without an
admitted key never gets past the handshake: it sees no reply at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


@dataclass(frozen=True)
class CurveServerKeys:
    """secret_key_file: the daemon's certificate with its secret key (``*.key_secret``).
    public_keys_dir: directory of the admitted clients' public certificates (``*.key``)."""

    secret_key_file: Path
    public_keys_dir: Path

    def problems(self) -> list[str]:
        """What is wrong with the key files (empty if they are usable)."""
        found = []
        try:
            mode = self.secret_key_file.stat().st_mode
            if mode & 0o077:
                found.append(f"{self.secret_key_file} can be read or written by other users "
                             f"(mode {mode & 0o777:o}): chmod 600 it, and keep it secret")
        except OSError:
            pass  # reported below
        try:
            _, secret = zmq.auth.load_certificate(self.secret_key_file)
            if secret is None:
                found.append(f"{self.secret_key_file} holds no secret key")
        except (OSError, ValueError) as error:
            found.append(f"cannot read the secret key file {self.secret_key_file}: {error}")
        if not self.public_keys_dir.is_dir():
            found.append(f"{self.public_keys_dir} is not a directory")
        elif not any(self.public_keys_dir.glob("*.key")):
            found.append(f"{self.public_keys_dir} holds no public key (*.key): no client could "
                         "connect")
        return found


def secure(socket: zmq.Socket[Any], context: zmq.Context[Any],
           keys: CurveServerKeys) -> ThreadAuthenticator:
    """Make ``socket`` (not yet bound) a CURVE server admitting the keys in the directory.

    Returns the running authenticator; stop it when the socket is closed.
    """
    public, secret = zmq.auth.load_certificate(keys.secret_key_file)
    if secret is None:
        raise ValueError(f"{keys.secret_key_file} holds no secret key")
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("spusim.device.auth"))
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(keys.public_keys_dir))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator
