"""The package list, which pyproject.toml cannot state: discbench's packages plus the C++ kernel
sources of the top-level csrc/ shipped as `discbench.csrc`, so that an installed wheel compiles
the CPU kernel on first use just as a checkout does (discbench/scan/cpu.py looks in both places).
Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["discbench*"]), "discbench.csrc"],
      package_dir={"discbench.csrc": "csrc"})
