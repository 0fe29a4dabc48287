"""The one compiled part: the fan-out's per-device loop (src/tocsin/channels/_fanout.c).

Optional: where it cannot be built (no compiler or Python headers), tocsin installs
anyway and runs the same loop in Python (tocsin.channels.live._write_each_py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tocsin.channels._fanout", ["src/tocsin/channels/_fanout.c"], optional=True,
                  extra_compile_args=["-O2"]),
    ],
)
