"""Helpers of the DHCP agent's unit tests: requests built with scapy (the
independent encoder the codec is checked against) and boot-file roots."""

from scapy.layers import dhcp as scapy_dhcp

MAC = '52:54:00:aa:bb:01'


def packet(message_type='discover', mac=MAC, xid=0x1234, flags=0,
           ciaddr='0.0.0.0', giaddr='0.0.0.0', options=()):
    chaddr = bytes.fromhex(mac.replace(':', '')) + bytes(10)
    return bytes(scapy_dhcp.BOOTP(op=1, xid=xid, flags=flags, ciaddr=ciaddr,
                                  giaddr=giaddr, chaddr=chaddr)
                 / scapy_dhcp.DHCP(options=[('message-type', message_type),
                                            *options, 'end']))


def options_of(data):
    """``{name: value}`` of a reply, decoded by scapy."""
    reply = scapy_dhcp.BOOTP(data)
    result = {}
    for option in reply[scapy_dhcp.DHCP].options:
        if isinstance(option, tuple):
            result[option[0]] = option[1] if len(option) == 2 else option[1:]
    return reply, result


def boot_root(tmp_path, files):
    """A boot-file root ``tmp_path/root`` holding ``files``, and ``escape``
    in it: a link to the file ``tmp_path/secret`` outside the root.

    :param files: ``{relative path: bytes}``.
    :returns: the root's path.
    """
    base = tmp_path / 'root'
    base.mkdir()
    for name, content in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(content)
    (tmp_path / 'secret').write_text('secret')
    (base / 'escape').symlink_to(tmp_path / 'secret')
    return base
