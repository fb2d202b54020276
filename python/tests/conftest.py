import os
import sys

# CTest sets PYTHONPATH to the build tree's python/ directory; by hand, build/python is the default.
try:
    import chainrule  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "build", "python"))
