import sys

from altdiffusion.serve.server import main

sys.exit(main())
