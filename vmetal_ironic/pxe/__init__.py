"""The vmetal DHCP agent: a PXE responder for the provisioning network.

Pure parts (no sockets, no store): :mod:`decisions` (what to answer),
:mod:`dynamic` (the optional inspection range) and :mod:`codec` (bytes in,
bytes out). Adapters: :mod:`cache` (reservations in memory, fed from the
store), :mod:`server` (the UDP socket), :mod:`tftp`, :mod:`ra` (IPv6 router
advertisements), :mod:`metrics`, and :mod:`agent`, which ties them together.
"""
