"""The compiled part of the package; everything else is declared in pyproject.toml.

playbook.collect.serverlog._scan (the stderr reader's loops) and ._records (csvlog and jsonlog
records) are plain C against Python's headers (no Cython, no numpy headers), so gcc and
python3-dev are all a build needs. It is not optional: a machine that
cannot build it should say so at install time rather than read logs at a fraction of the speed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "playbook.collect.serverlog._scan",
            ["playbook/collect/serverlog/_scan.c"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "playbook.collect.serverlog._records",
            ["playbook/collect/serverlog/_records.c"],
            extra_compile_args=["-O2"],
        ),
    ]
)
