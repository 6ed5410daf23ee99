"""The vmetal DHCP agent: a PXE responder for the provisioning network.

Pure parts (no sockets, no store): :mod:`messages` (the message types),
:mod:`decisions` (what to answer), :mod:`dynamic` (the optional inspection
range), :mod:`codec` (bytes in, bytes out; imports no policy) and
:mod:`settings` (the configuration, checked). Adapters: :mod:`cache`
(reservations in memory, fed from the store), :mod:`server` (the UDP
socket), :mod:`link` (the interface going away and coming back),
:mod:`tftp`, :mod:`ra` (IPv6 router advertisements), :mod:`metrics`, and
:mod:`agent`, which ties them together.
"""
