import sys

from inventory_worker.main import main

sys.exit(main())
