import os
import sys

# The tests import the stand-in daemon next to them.
sys.path.insert(0, os.path.dirname(__file__))
