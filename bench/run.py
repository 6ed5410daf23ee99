"""Run the benchmarks: ``tox -e bench [-- NAME ...]``.

Every ``bench/bench_<name>.py`` module exposes ``main()``, which prints its
own figures beside the peer it is compared with. With no arguments, all of
them run in name order; otherwise only the named ones.
"""

import importlib
import os
import pathlib
import platform
import sys

HERE = pathlib.Path(__file__).resolve().parent


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}'


def main(argv):
    sys.path.insert(0, str(HERE))
    available = sorted(path.stem[len('bench_'):]
                       for path in HERE.glob('bench_*.py'))
    wanted = argv or available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(f'unknown benchmark(s): {", ".join(unknown)}; '
              f'available: {", ".join(available)}', file=sys.stderr)
        return 2
    print(f'machine: {_machine()}')
    for name in wanted:
        # The machine may be shared: the load beside each figure.
        print(f'\n== {name} == (load average {_load()})')
        module = importlib.import_module(f'bench_{name}')
        module.main()
        print(f'== {name} done == (load average {_load()})')
    return 0


def _load():
    return ' '.join(f'{value:.2f}' for value in os.getloadavg())


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
