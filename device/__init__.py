"""The emulated SPU daemon: physics kernels, device state, and the server that exposes them.

Imports only protocol/ and timing/; a host reaches it over the wire, never by import. Kept free
of imports here so that ``python -m spusim.device`` can set thread counts before numpy loads.
"""
