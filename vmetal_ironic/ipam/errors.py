"""Typed IPAM errors; each message names the value that is wrong."""

from vmetal_ironic import exception


class IpamError(exception.InvalidProperty):
    """Base class of pool definition and allocation errors."""


class MissingCidr(IpamError):
    """No network-cidr property was found for a host that needs IPAM."""


class InvalidCidr(IpamError):
    """The network-cidr property is not ``<gateway>/<prefix>``."""


class InvalidGateway(IpamError):
    """The gateway is the network or the broadcast address."""


class UnsupportedIPv6(IpamError):
    """An IPv6 network or range was given; only IPv4 is supported yet."""


class InvalidRange(IpamError):
    """The network-ip-range property is malformed."""


class ReversedRange(InvalidRange):
    """A range whose start lies after its end."""


class RangeOutsideCidr(InvalidRange):
    """A range that does not lie entirely inside the CIDR."""


class OverlappingRanges(InvalidRange):
    """Two ranges share at least one address."""


class EmptyPool(IpamError):
    """The pool definition leaves no address that may be handed out."""


class PoolExhausted(IpamError):
    """Every address of the pool is allocated."""


class OwnerElsewhere(IpamError):
    """The owner already holds an address outside the pool it asks from."""


class AddressTaken(IpamError):
    """An address named explicitly (a custom network-data document, a
    gateway) is held by another owner."""
