"""Call a network interface method of a node through Ironic's own
TaskManager, in a separate process sharing the test Ironic's database.

Some interface methods (``get_node_network_data``) are only reached by Ironic
when it builds a virtual-media ISO, which needs tools and a BMC this test
does not have; this helper calls them the way Ironic's conductor code does,
with the real node loaded from the database and the real driver composed by
Ironic's driver factory.

Usage: ``python ironic_task.py CONFIG_FILE NODE_UUID METHOD`` prints the
result as JSON.
"""

import json
import sys

from ironic.common import context
from ironic.common import service
from ironic.conductor import task_manager


def main(argv):
    config_file, node_uuid, method = argv
    service.prepare_command(['ironic-vmetal-test', '--config-file',
                             config_file])
    with task_manager.acquire(context.get_admin_context(), node_uuid,
                              shared=True, purpose='vmetal test') as task:
        result = getattr(task.driver.network, method)(task)
    print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
    main(sys.argv[1:])
