"""The semi-public namespace for backend authors: what a ``specgraph.backends`` plugin may rely on.

A backend translates a :class:`specgraph.Plan`; before it allocates anything it should call
:func:`check_options` on the shared options and :func:`check_memory` on the plan (both
first-party backends do). Text from a plan that reaches generated code or markup goes
through :func:`visible` (and the format's own escaping); identifiers through
:class:`Namespace`. File artefacts name a level's output :func:`output_name` (``level_3``).
Everything here keeps its signature within a minor version.
"""

from ._codegen import CodegenError, Namespace, header, render_template
from ._memory import available_memory, check_memory, format_bytes
from ._naming import output_name
from ._options import COMMON_OPTIONS, check_options
from ._text import brief, first_unsafe, visible

__all__ = [
    "COMMON_OPTIONS",
    "CodegenError",
    "Namespace",
    "available_memory",
    "brief",
    "check_memory",
    "check_options",
    "first_unsafe",
    "format_bytes",
    "header",
    "output_name",
    "render_template",
    "visible",
]
