"""`python -m iplosctl.cli`: the same as the `iplosctl` command."""

import sys

from iplosctl.cli import main

# The guard matters: a `spawn` worker of `-j` imports the parent's main module again,
# as `__mp_main__`, and must not run the command a second time.
if __name__ == "__main__":
    sys.exit(main())
