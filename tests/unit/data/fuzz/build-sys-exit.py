import sys


def build():
    sys.exit(0)
