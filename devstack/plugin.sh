#!/bin/bash
# plugin.sh - devstack plugin for vmetal-ironic
#
# Phases (https://docs.openstack.org/devstack/latest/plugins.html):
#   stack install      install the package
#   stack post-config  enable the vmetal plugins in ironic.conf, write the
#                      agent's configuration
#   stack extra        start vmetal-dhcp-agent instead of dnsmasq
#   unstack            stop the agent
#   clean              remove its state and configuration

# The library sits next to this file, wherever devstack cloned the plugin.
# shellcheck source=devstack/lib/vmetal
source "$(dirname "${BASH_SOURCE[0]}")/lib/vmetal"

if is_service_enabled vmetal; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing vmetal-ironic"
        install_vmetal
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring vmetal-ironic"
        configure_vmetal
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        if is_service_enabled vmetal-dhcp-agent; then
            echo_summary "Starting vmetal-dhcp-agent"
            start_vmetal_dhcp_agent
        fi
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_vmetal_dhcp_agent
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_vmetal
    fi
fi
