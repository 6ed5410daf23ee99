"""What the agent answers to a DHCP message: pure logic, no I/O.

The server hands :func:`decide` a parsed :class:`~vmetal_ironic.dhcp_agent.messages.Request`, the
:class:`Binding` it found in memory for the client's MAC (or ``None``) and
the agent's :class:`Settings`; it gets back a :class:`Decision` that the
codec turns into bytes and :func:`destination` tells where to send them.

RFC 2131 rules kept here:

* DISCOVER from a known MAC -> OFFER of its reserved address.
* REQUEST, told apart by which fields are set (RFC 2131 4.3.2):
  SELECTING (server identifier set) -> ACK, or NAK when the requested
  address is not the reserved one; a REQUEST naming *another* server's
  identifier is the client choosing that server, and several agents may
  serve one link, so it is ignored, never NAKed.
  INIT-REBOOT (requested address, no server identifier) and
  RENEWING/REBINDING (ciaddr set) -> ACK for the reserved address, NAK
  otherwise.
* RELEASE and DECLINE get no reply, and are acted on only when they name
  this server (option 54, which RFC 2131 table 5 makes a MUST) and the
  client's own address (ciaddr for RELEASE, option 50 for DECLINE):
  anyone can put a victim's MAC in ``chaddr``, and a forged one must not
  free or burn the victim's lease. INFORM gets an ACK without a lease.
* A MAC with no reservation is ignored ("the server MUST remain silent if
  it has no record of the client") unless the dynamic range gives it one.
"""


import socket

from vmetal_ironic.dhcp_agent import messages as m


def choose_boot(request, binding, settings):
    """Pick the boot information for a client, or ``None``.

    An OS's DHCP client (no PXE vendor class, no architecture, not iPXE) gets
    none. The reservation's own boot options win over the agent's defaults.

    :returns: a :class:`~vmetal_ironic.dhcp_agent.messages.BootReply` or ``None``.
    """
    next_server = binding.tftp_server or settings.server_address_text
    if request.is_ipxe:
        url = binding.ipxe_script_url or settings.ipxe_script_url
        if url and settings.url_translation is not None:
            # Ironic's script URL is on the cluster network; the client
            # reaches it through the agent's bridge.
            url = settings.url_translation.url(url)
        if url:
            return m.BootReply('ipxe', url, next_server=next_server,
                             no_pxedhcp=settings.no_pxedhcp)
        # Without a script, handing iPXE a boot file again would loop;
        # plain configuration at least lets it fall through to other
        # boot devices.
        return None
    if request.is_http_client:
        url = binding.http_boot_url or settings.http_boot_url
        if url:
            return m.BootReply('http', url, vendor_class=b'HTTPClient')
        return None
    if request.is_pxe_client:
        filename = binding.bootfile or settings.boot_file_for(request.arch)
        if filename:
            return m.BootReply('pxe', filename, next_server=next_server)
    return None


def _answer(action, reason, request, binding, settings):
    return m.Decision(action, reason, binding,
                    choose_boot(request, binding, settings))


def _check_address(request, binding, wanted, settings, state):
    if wanted == binding.address:
        return _answer(m.Action.ACK, state, request, binding, settings)
    return m.Decision(m.Action.NAK, f'{state}: asked for '
                    f'{socket.inet_ntoa(wanted)}, reserved '
                    f'{binding.address_text}', binding)


def _release_or_decline(request, binding, settings):
    # The reasons are a fixed set: they are a metric's label values.
    name = m.message_name(request.message_type).lower()
    if request.server_id is None:
        return m.Decision(m.Action.IGNORE, f'{name} without server '
                                           'identifier')
    if request.server_id != settings.server_address:
        return m.Decision(m.Action.IGNORE, f'{name} for another server')
    if binding is None:
        return m.Decision(m.Action.IGNORE, 'unknown MAC')
    named = (request.ciaddr if request.message_type == m.RELEASE
             else request.requested_address)
    if named != binding.address:
        return m.Decision(m.Action.IGNORE, f'{name} of an address not the '
                                           "client's")
    return m.Decision(m.Action.NO_REPLY, name, binding)


def decide(request, binding, settings):
    """Decide the answer to ``request``.

    :param request: a :class:`Request`.
    :param binding: the :class:`Binding` for ``request.mac``, or ``None``.
    :param settings: the agent's :class:`Settings`.
    :returns: a :class:`~vmetal_ironic.dhcp_agent.messages.Decision`.
    """
    kind = request.message_type
    foreign = (request.server_id is not None
               and request.server_id != settings.server_address)
    if kind == m.DISCOVER:
        if binding is None:
            return m.Decision(m.Action.IGNORE, 'unknown MAC')
        return _answer(m.Action.OFFER, 'discover', request, binding, settings)
    if kind == m.REQUEST:
        if foreign:
            # The client picked another server's offer (maybe another
            # agent of ours): stay silent, a NAK would break its lease.
            return m.Decision(m.Action.IGNORE, 'request for another server')
        if binding is None:
            return m.Decision(m.Action.IGNORE, 'unknown MAC')
        if request.server_id is not None:
            wanted = request.requested_address or request.ciaddr
            return _check_address(request, binding, wanted, settings,
                                  'selecting')
        if request.requested_address is not None:
            return _check_address(request, binding,
                                  request.requested_address, settings,
                                  'init-reboot')
        if request.ciaddr != m.ZERO_ADDRESS:
            state = ('renewing' if request.flags & m.BROADCAST_FLAG == 0
                     else 'rebinding')
            return _check_address(request, binding, request.ciaddr,
                                  settings, state)
        return m.Decision(m.Action.IGNORE, 'request names no address')
    if kind in (m.RELEASE, m.DECLINE):
        return _release_or_decline(request, binding, settings)
    if kind == m.INFORM:
        if binding is None:
            return m.Decision(m.Action.IGNORE, 'unknown MAC')
        return _answer(m.Action.INFORM_ACK, 'inform', request, binding,
                       settings)
    return m.Decision(m.Action.IGNORE, f'{m.message_name(kind)} is not for a '
                    'server')



def destination(request, action, client_port=68, server_port=67):
    """Where a reply goes (RFC 2131 4.1).

    Relayed requests go back to the relay's giaddr on the server port; a
    NAK is broadcast; a client that has an address (renewing, INFORM) gets
    a unicast to ciaddr; everyone else a broadcast, since a client without
    an address cannot answer ARP.

    :returns: ``(address_text, port, broadcast_flag_in_reply)``.
    """
    if request.giaddr != m.ZERO_ADDRESS:
        return (socket.inet_ntoa(request.giaddr), server_port,
                action is m.Action.NAK)
    if action is m.Action.NAK:
        return m.BROADCAST_ADDRESS, client_port, True
    if request.ciaddr != m.ZERO_ADDRESS and (
            action is m.Action.INFORM_ACK
            or request.message_type == m.REQUEST):
        return socket.inet_ntoa(request.ciaddr), client_port, False
    return m.BROADCAST_ADDRESS, client_port, False
