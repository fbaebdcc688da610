# SPDX-License-Identifier: BSD-3-Clause
"""``python -m psfmatch.cli``: the ``psfmatch`` command."""

import sys

from . import main

sys.exit(main())
