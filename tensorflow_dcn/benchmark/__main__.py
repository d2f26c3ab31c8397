import sys

from tensorflow_dcn.benchmark.cli import main

sys.exit(main())
