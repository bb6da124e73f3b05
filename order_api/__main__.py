import sys

from order_api.main import main

sys.exit(main())
