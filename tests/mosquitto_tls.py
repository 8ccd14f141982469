"""A private Mosquitto with TLS listeners, beside the plain ones of `Mosquitto`, and the certificates for it.

Listeners added (all on 127.0.0.1, certificates from `certificates.py`, made for each broker):

- `tls_port`: TLS, anonymous; the broker's certificate names localhost and 127.0.0.1.
- `mtls_port`: mutual TLS: a client certificate of `client_ca` is required, and its common name is the
  user name (`use_identity_as_username`).
- `tls_auth_port`: TLS plus `password_file` (user `agent`, password `agent-pass`).
- `wrong_name_port`: TLS with a certificate that names only `broker.invalid`, to test the host-name check.

Mosquitto 2.0.11 refuses a TLS client without a certificate on `mtls_port` during the handshake, and
logs `OpenSSL Error` lines for handshakes that fail on either side.
"""

from __future__ import annotations

import pathlib

from certificates import Authority, Issued
from mosquitto import Mosquitto
from support import free_ports


class TlsMosquitto(Mosquitto):
    """`Mosquitto` plus the TLS listeners above; `ca`, `client` and `rogue_client` are for clients."""

    def __init__(self, workdir: pathlib.Path) -> None:
        super().__init__(workdir)
        self.tls_port, self.mtls_port, self.tls_auth_port, self.wrong_name_port = free_ports(4, self.host)
        pki = workdir / "pki"
        self.ca = Authority(pki, "broker-ca")
        self.client_ca = Authority(pki, "client-ca")
        self._server = self.ca.server("broker")
        self._wrong_name = self.ca.server("broker-wrong-name", dns=("broker.invalid",), ips=())
        self.client: Issued = self.client_ca.client("client", "mcpmqtt-agent")
        self.rogue_client: Issued = Authority(pki, "rogue-ca").client("rogue", "mcpmqtt-agent")

    @property
    def listening_ports(self) -> set[int]:
        return {
            *super().listening_ports,
            self.tls_port,
            self.mtls_port,
            self.tls_auth_port,
            self.wrong_name_port,
        }

    def _more_listeners(self) -> str:
        server, wrong = self._server, self._wrong_name
        return f"""
listener {self.tls_port} {self.host}
allow_anonymous true
certfile {server.cert}
keyfile {server.key}

listener {self.mtls_port} {self.host}
allow_anonymous false
certfile {server.cert}
keyfile {server.key}
cafile {self.client_ca.cert}
require_certificate true
use_identity_as_username true

listener {self.tls_auth_port} {self.host}
allow_anonymous false
password_file {self.workdir / "passwords"}
certfile {server.cert}
keyfile {server.key}

listener {self.wrong_name_port} {self.host}
allow_anonymous true
certfile {wrong.cert}
keyfile {wrong.key}
"""
