import setuptools

# The TFTP server's compiled data path (vmetal_ironic/dhcp_agent/
# _tftp_pump.c, doc/source/tftp.rst). Optional: without a C compiler the
# package installs and the server runs its Python path.
setuptools.setup(
    pbr=True,
    ext_modules=[setuptools.Extension(
        'vmetal_ironic.dhcp_agent._tftp_pump',
        ['vmetal_ironic/dhcp_agent/_tftp_pump.c'],
        extra_compile_args=['-O2', '-Wall', '-Wextra', '-Wno-unused-parameter',
                            '-Wno-missing-field-initializers'],
        optional=True)])
