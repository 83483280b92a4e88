"""`python -m iplosctl.cli`: the same as the `iplosctl` command."""

import sys

from iplosctl.cli import main

sys.exit(main())
