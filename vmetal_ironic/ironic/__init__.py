"""The Ironic-facing adapters of vmetal-ironic.

Everything here is loaded by Ironic through entry points: the ``vmetal``
network interface, the vmetal hardware types and the ``vmetal`` DHCP
provider, which is also the provisioning hook. They translate between
Ironic's objects and exceptions and the store-agnostic domain code.
"""
