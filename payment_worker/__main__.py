import sys

from payment_worker.main import main

sys.exit(main())
