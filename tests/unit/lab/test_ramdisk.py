import sys

from vmetal_ironic.lab import ramdisk


def test_a_dynamically_linked_binary_is_not_static():
    # The Python interpreter running the tests is dynamically linked.
    assert not ramdisk.is_static_elf(sys.executable)


def test_not_an_elf_is_not_static(tmp_path):
    script = tmp_path / 'script'
    script.write_text('#!/bin/sh\n')
    assert not ramdisk.is_static_elf(script)


def test_static_busybox_is_static():
    # busybox-static is in bindep.txt for both the test and lab profiles.
    assert ramdisk.is_static_elf(ramdisk.BUSYBOX)
