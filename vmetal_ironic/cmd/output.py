"""Human tables and JSON for the command-line tools."""

import json


def render_table(headers, rows):
    """Render ``rows`` (sequences of cells) under ``headers`` as text."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row,
                                                               strict=True)]
    lines = ['  '.join(header.ljust(width)
                       for header, width in zip(headers, widths, strict=True))
             .rstrip()]
    lines.append('  '.join('-' * width for width in widths))
    for row in cells:
        lines.append('  '.join(cell.ljust(width)
                               for cell, width in zip(row, widths, strict=True))
                     .rstrip())
    return '\n'.join(lines)


def render_json(data):
    return json.dumps(data, indent=2, sort_keys=True)
