"""Which data path the TFTP server runs: compiled or Python.

The compiled one is ``_tftp_pump`` (C, built with the package when a
compiler is there; ``doc/source/tftp.rst`` says why it exists). It
provides the base class of every session, :class:`SessionCore`, whose
fields (window base, blocks sent, deadline, retries left...) the
Python session code and the C pump both read and write, and the
per-loop :class:`Pump`. Without it, :class:`SessionCore` is the plain
class below with the same fields, and every loop runs in Python.

Either way the sessions are the same objects with the same fields; only
the event loop differs (``TftpServer.data_path``).
"""

try:
    from vmetal_ironic.dhcp_agent import _tftp_pump
except ImportError:  # not built (no compiler): the Python path serves
    _tftp_pump = None

COMPILED = 'compiled'
PYTHON = 'python'

#: The compiled path is built and importable.
AVAILABLE = _tftp_pump is not None


class PySessionCore:
    """The fields of ``_tftp_pump.SessionCore``, for the Python path.

    ``Session.__init__`` sets every one of them, as it does on the C base.
    """

    __slots__ = (
        '_base',
        '_data',
        '_fd',
        '_last',
        '_retries_left',
        '_sent_upto',
        '_waiting_oack',
        'blksize',
        'deadline',
        'last_heard',
        'proven',
        'result',
        'retries',
        'timeout',
        'windowsize',
    )


if AVAILABLE:
    SessionCore = _tftp_pump.SessionCore
    Pump = _tftp_pump.Pump
else:
    SessionCore = PySessionCore
    Pump = None


def choose(compiled):
    """:returns: :data:`COMPILED` or :data:`PYTHON` for a server.

    :param compiled: use the compiled path when it is built.
    """
    return COMPILED if compiled and AVAILABLE else PYTHON
