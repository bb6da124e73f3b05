"""The order status projector: group order-status reads every stream."""
import sys

from status_projector.main import main

sys.exit(main())
