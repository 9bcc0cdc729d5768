"""The one thing pyproject.toml cannot say: lgf's C extension, the pclntab's pc-value decoder.

Everything else about the package (name, dependencies, packages) is in pyproject.toml. The module
is required, not optional: a machine without a C compiler gets a clear build error from
`make setup` (which installs gcc and python3-dev from Debian first), rather than a symbolizer that
is silently 15x slower. lgf.golang.pclntab_format still runs without it, logging why.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lgf.golang._pcvalue", ["core/golang/_pcvalue.c"],
                             extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers", "-Wno-cast-function-type"])])
