import sys

from chopinbot.cli import main

sys.exit(main())
