import sys

from olmo2.cli import main

sys.exit(main())
