"""Packaging: environment.yml and pyproject.toml name the same dependencies."""

import tomllib

import yaml

from book_tools.nbexport import ROOT


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_requirements = set(project["dependencies"])
    for extra in ("dev", "book"):
        pip_requirements |= set(project["optional-dependencies"][extra])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) - {"-e ."} == pip_requirements
    assert "python=3.11" in env["dependencies"]


def test_constraints_pin_every_package_exactly():
    lines = [line for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    assert "torch==2.13.0" in lines
