"""The TLS files a gateway presents to an ``mqtts://`` community broker, and the client context
made from them. The installer issues the files (:mod:`gateway.installer.pki`); this is the part
the gateway service itself needs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class PkiError(ValueError):
    """A certificate or key file that cannot be made or used; the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The three PEM files one MQTT client needs: the community CA, its certificate, its key."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context that trusts only the community CA (not the system store, so no
        public CA can vouch for a fake broker) and presents this client's certificate."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(f"{self.ca}: cannot load the community CA ({exc})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(
                f"{self.cert} / {self.key}: cannot load the client certificate and key ({exc})"
            ) from None
        return context
