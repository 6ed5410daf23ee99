"""What every option-group module of :mod:`vmetal_ironic.conf` shares.

Each group module declares ``GROUP`` and ``opts`` with their help; the two
functions callers use on it (``register_opts`` for a ``ConfigOpts``,
``list_opts`` for :mod:`vmetal_ironic.conf.opts`) are made here once.
"""


def hooks(group, opts):
    """The ``register_opts`` and ``list_opts`` of one option group.

    :param group: the group's name, e.g. ``vmetal_dhcp_agent``.
    :param opts: the group's options.
    :returns: ``(register_opts, list_opts)``: ``register_opts(conf)``
        registers ``opts`` under ``group`` on ``conf``; ``list_opts()``
        returns ``{group: opts}``.
    """
    def register_opts(conf):
        conf.register_opts(opts, group=group)

    def list_opts():
        return {group: opts}

    return register_opts, list_opts
