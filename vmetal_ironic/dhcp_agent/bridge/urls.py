"""Ironic's cluster-side URLs translated to the agent's, in the documents
that cross to the provisioning side: pure, no I/O.

Ironic writes its own URLs into what the ramdisk and iPXE read: the iPXE
script and the node's boot config (``[deploy]http_url`` for kernels and
ramdisks, ``ipa-api-url`` in the kernel parameters) and the commands the
conductor sends to IPA (the instance image's URL under ``http_url``). On
the cluster network those URLs are right (the conductor itself checks the
image URL with a HEAD request before it hands it over); on the
provisioning side they are unreachable. The agent replaces them, in small
HTTP-root responses, in the conductor's command bodies and in the iPXE
script URL of a reservation (which the vmetal DHCP provider takes from
Ironic's DHCP options), by the URLs it advertises there, so Ironic is
configured with its own cluster URLs only.
"""


class Translation:
    """Replace each ``(theirs, ours)`` prefix, longest first.

    :param pairs: ``(cluster URL, provisioning URL)`` pairs; trailing
        slashes are ignored, empty or identical pairs skipped.
    """

    def __init__(self, pairs):
        cleaned = {}
        for theirs, ours in pairs:
            theirs, ours = theirs.rstrip('/'), ours.rstrip('/')
            if theirs and theirs != ours:
                cleaned[theirs.encode()] = ours.encode()
        self.pairs = sorted(cleaned.items(), key=lambda p: -len(p[0]))

    def __bool__(self):
        return bool(self.pairs)

    def url(self, text):
        """:returns: ``text`` (a URL, or ``None``) translated."""
        return self.apply(text.encode()).decode() if text else text

    def apply(self, body):
        """:returns: ``body`` (bytes) with every cluster URL replaced."""
        for theirs, ours in self.pairs:
            if theirs in body:
                body = body.replace(theirs, ours)
        return body
