"""vmetal-ironic: network identity and PXE boot for bare-metal servers."""
