"""`python -m lenet_keras ...`: see `lenet_keras.cli`."""

import sys

from lenet_keras.cli import main

sys.exit(main())
