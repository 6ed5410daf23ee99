"""The PXE lab: a provisioning L2 in network namespaces, a real Ironic, the
vmetal DHCP agent and a QEMU machine, on one host. Used by ``vmetal-lab``
and by the functional tests.
"""
