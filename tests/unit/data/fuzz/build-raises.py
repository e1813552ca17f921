import hpcorch


def build():
    raise ValueError("boom")
