"""Package version, as pbr computes it from git or the installed metadata."""

import pbr.version

version_info = pbr.version.VersionInfo('vmetal-ironic')
