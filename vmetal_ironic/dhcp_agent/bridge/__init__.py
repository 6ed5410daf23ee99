"""The agent as the one bridge between the provisioning L2 and the cluster
network: HTTP forwards with fixed routes, no packet forwarding.

* :mod:`.routes` decides what a request may reach (no I/O);
* :mod:`.heartbeat` rewrites a heartbeat's callback URL (no I/O);
* :mod:`.upstream` names and opens the connections to Ironic and to a
  ramdisk;
* :mod:`.exchange` carries one request and its response, streamed;
* :mod:`.admission` bounds the connections, in all and per client;
* :mod:`.cache_policy` decides what local copies of the HTTP root may
  answer and keep (no I/O); :mod:`.http_cache` holds them;
* :mod:`.service` runs the three listeners on one event loop thread;
* :mod:`.config` reads ``[vmetal_bridge]``.
"""
