"""The installer's tools, run on the installer's laptop, never by the gateway service: flashing a
board (``flash``), the community's TLS PKI (``pki``), the broker's Mosquitto config and
revocations at the broker (``brokerconfig``), and publishing a signed revocation (``revocation``).
The gateway itself needs only the client side of TLS, :mod:`gateway.tls`."""
