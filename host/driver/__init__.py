"""The driver: a Device client over the wire protocol, the daemon as a subprocess, typed errors.

Imports only spusim.protocol and spusim.timing; it reaches the device over the wire, never by import.
"""
