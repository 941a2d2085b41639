"""A torchrun worker that never finishes: the launcher's timeout must end it."""

import time

time.sleep(3600)
