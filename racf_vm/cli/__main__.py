"""``python -m racf_vm.cli``: the administrator's command line."""

import sys

from racf_vm.cli import main

sys.exit(main())
