"""``vmetal-ipam``: operate the address pools from a shell.

Works on whichever store ``[vmetal]store`` selects, with no Ironic and (on
the local store) no Kubernetes running. Errors print one line and exit 1;
usage errors exit 2.
"""

import argparse
import sys

from oslo_config import cfg
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import properties as props
from vmetal_ironic import store as store_mod
from vmetal_ironic.cmd import output

PROG = 'vmetal-ipam'


def _add_pool_arguments(parser):
    group = parser.add_argument_group(
        'pool properties (override the [vmetal] defaults)')
    group.add_argument('--cidr', metavar='GATEWAY/PREFIX',
                       help='metal3.vcluster.com/network-cidr')
    group.add_argument('--ip-range', metavar='A-B[,C-D]',
                       help='metal3.vcluster.com/network-ip-range')
    group.add_argument('--dns-servers', metavar='IP[,IP]',
                       help='metal3.vcluster.com/dns-servers')
    group.add_argument('--network-data', metavar='JSON',
                       help='metal3.vcluster.com/network-data (a complete '
                            'document; no pool address is taken)')
    group.add_argument('-p', '--property', action='append', default=[],
                       metavar='KEY=VALUE',
                       help='any vMetal property; may repeat')


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Allocate, release and inspect vmetal-ironic addresses.')
    parser.add_argument('--config-file', action='append', default=[],
                        help='oslo.config file; may repeat')
    parser.add_argument('--database', metavar='PATH',
                        help='local store file (overrides '
                             '[vmetal_local_store]database)')
    parser.add_argument('--json', action='store_true',
                        help='print machine-readable JSON')
    parser.add_argument('--debug', action='store_true',
                        help='log at debug level on stderr')
    # --json is also accepted after the command; SUPPRESS keeps the
    # subparser from resetting a --json given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--json', action='store_true',
                        default=argparse.SUPPRESS,
                        help='print machine-readable JSON')
    commands = parser.add_subparsers(dest='command', required=True,
                                     metavar='COMMAND')

    def command(name, help_text):
        return commands.add_parser(name, parents=[common], help=help_text)

    allocate = command('allocate',
                       'give an owner an address (or show the one it has)')
    allocate.add_argument('owner', help='e.g. Machine/default/worker-0')
    allocate.add_argument('--mac', help='boot MAC of the host')
    _add_pool_arguments(allocate)

    command('release', "free an owner's address").add_argument('owner')

    listing = command('list', 'list allocations')
    listing.add_argument('--pool', metavar='NETWORK',
                         help='only this pool, e.g. 192.0.2.0/24')

    _add_pool_arguments(command('usage', 'size, used and free of a pool'))

    command('network-data',
            "print an owner's network_data.json").add_argument('owner')

    command('reservations', 'list DHCP reservations')

    command('reconcile', 'free the addresses of owners that no longer exist '
                         '(Kubernetes store)')

    migrate = command('migrate', 'move the pool and reservation ConfigMaps '
                                 'of earlier releases into AddressClaims and '
                                 'DHCPReservations (Kubernetes store; '
                                 'idempotent)')
    migrate.add_argument('--delete', action='store_true',
                         help='delete each old ConfigMap once all its '
                              'entries are migrated')
    return parser


def _layer(args):
    layer = props.Layer(props.parse_assignments(args.property),
                        'the command line')
    for key, value in ((props.NETWORK_CIDR, args.cidr),
                       (props.NETWORK_IP_RANGE, args.ip_range),
                       (props.DNS_SERVERS, args.dns_servers),
                       (props.NETWORK_DATA, args.network_data)):
        if value is not None:
            layer[key] = value
    return layer


def _allocate(conf, store, args):
    result = host_network.ensure(store, args.owner, mac=args.mac,
                                 layers=[_layer(args)],
                                 defaults=host_network.defaults_from_conf(conf),
                                 mtu=conf.vmetal.mtu)
    allocation = result.allocation
    data = {
        'owner': args.owner,
        'pool': allocation.pool_key if allocation else None,
        'address': allocation.address if allocation else None,
        'prefixlen': result.spec.pool.prefixlen if allocation else None,
        'gateway': str(result.spec.pool.gateway) if allocation else None,
        'dns_servers': list(result.spec.dns_servers),
        'custom_network_data': allocation is None,
    }
    if args.json:
        return output.render_json(data)
    if allocation is None:
        return f'{args.owner}: custom network-data stored; no pool address taken'
    return (f'{args.owner}: {allocation.address}/{data["prefixlen"]} '
            f'gateway {data["gateway"]} (pool {allocation.pool_key})')


def _release(conf, store, args):
    allocation = host_network.release(store, args.owner)
    if args.json:
        return output.render_json(
            {'owner': args.owner,
             'released': allocation.address if allocation else None})
    if allocation is None:
        return f'{args.owner}: held no address; nothing to release'
    return (f'{args.owner}: released {allocation.address} '
            f'(pool {allocation.pool_key})')


def _list(conf, store, args):
    allocations = store.list_allocations(args.pool)
    rows = [(a.pool_key, a.address, a.owner, a.mac or '-') for a in allocations]
    if args.json:
        return output.render_json(
            [dict(zip(('pool', 'address', 'owner', 'mac'), row, strict=True))
             for row in rows])
    return output.render_table(('POOL', 'ADDRESS', 'OWNER', 'MAC'), rows)


def _usage(conf, store, args):
    merged = props.merge(_layer(args), host_network.defaults_from_conf(conf))
    merged.pop(props.NETWORK_DATA, None)
    pool = props.resolve(merged).pool
    used = pool.count_used(a.address for a in store.list_allocations(pool.key))
    data = {'pool': pool.name, 'size': pool.size, 'used': used,
            'free': pool.size - used}
    if args.json:
        return output.render_json(data)
    return output.render_table(('POOL', 'SIZE', 'USED', 'FREE'),
                               [(pool.name, pool.size, used, pool.size - used)])


def _network_data(conf, store, args):
    document = store.get_network_data(args.owner)
    if document is None:
        raise exception.NotFound(
            f'owner {args.owner!r} has no network data; allocate first')
    return output.render_json(document)


def _reservations(conf, store, args):
    reservations = store.list_reservations()
    if args.json:
        return output.render_json([r.to_dict() for r in reservations])
    rows = [(r.mac, f'{r.address}/{r.prefixlen}', r.gateway or '-',
             r.node or '-', r.boot.bootfile or '-') for r in reservations]
    return output.render_table(('MAC', 'ADDRESS', 'GATEWAY', 'NODE',
                                'BOOTFILE'), rows)


def _reconcile(conf, store, args):
    # Stores whose owners have no lifecycle of their own (local) release
    # nothing here; standalone Ironic nodes are released by the conductor.
    released = store.reconcile()
    if args.json:
        return output.render_json(
            [{'owner': a.owner, 'pool': a.pool_key, 'address': a.address}
             for a in released])
    if not released:
        return 'nothing to release'
    return output.render_table(('POOL', 'ADDRESS', 'OWNER'),
                               [(a.pool_key, a.address, a.owner)
                                for a in released])


def _migrate(conf, store, args):
    # Imported here: only this command needs the Kubernetes client.
    from vmetal_ironic.store.kubernetes import migration

    if conf.vmetal.store != 'kubernetes':
        raise exception.PermanentError(
            f'migrate moves the ConfigMaps of the Kubernetes store; '
            f'[vmetal]store is {conf.vmetal.store!r}')
    steps = migration.migrate(store, delete=args.delete)
    if args.json:
        return output.render_json(
            [{'source': s.source, 'key': s.key, 'outcome': s.outcome,
              'detail': s.detail} for s in steps])
    counts = migration.summary(steps)
    rows = [(s.source, s.key, s.outcome, s.detail) for s in steps
            if s.outcome not in (migration.CREATED, migration.PRESENT)]
    text = ', '.join(f'{n} {outcome}' for outcome, n in counts.items())
    if rows:
        text += '\n' + output.render_table(('SOURCE', 'ENTRY', 'OUTCOME',
                                             'DETAIL'), rows)
    return text


COMMANDS = {
    'allocate': _allocate,
    'release': _release,
    'list': _list,
    'usage': _usage,
    'network-data': _network_data,
    'reservations': _reservations,
    'reconcile': _reconcile,
    'migrate': _migrate,
}


def _load_conf(args):
    conf = cfg.ConfigOpts()
    vmetal_conf.vmetal.register_opts(conf)
    vmetal_conf.local_store.register_opts(conf)
    vmetal_conf.kubernetes.register_opts(conf)
    log.register_options(conf)
    cli = []
    for path in args.config_file:
        cli += ['--config-file', path]
    conf(cli, project='vmetal-ironic', default_config_files=[])
    if args.database:
        conf.set_override('database', args.database,
                          group='vmetal_local_store')
    conf.set_override('debug', args.debug)
    conf.set_default('default_log_levels', ['vmetal_ironic=WARNING'])
    if args.debug:
        conf.set_override('default_log_levels', ['vmetal_ironic=DEBUG'])
    log.setup(conf, PROG)
    return conf


def main(argv=None, stdout=None, stderr=None):
    """Run ``vmetal-ipam``; returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    store = None
    try:
        conf = _load_conf(args)
        store = store_mod.get_store(conf)
        text = COMMANDS[args.command](conf, store, args)
    except (exception.VmetalError, cfg.Error) as exc:
        stderr.write(f'{PROG}: error: {exc}\n')
        return 1
    finally:
        if store is not None:
            store.close()
    stdout.write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
