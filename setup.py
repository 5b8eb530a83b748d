"""The one build step pyproject.toml cannot declare: the SAM application goes in the wheel.

`imagebatch local run` runs template.yaml, statemachine/ and functions/; `--sample` names a
manifest under events/manifests/; `submit` reads samconfig.toml's stack. They sit at the
repository root, outside every package, so package-data cannot name them: build_py copies
them into imagebatch_cli/application/, where imagebatch_cli.project finds them when the CLI
is installed from a wheel (an editable install finds them at the repository root instead).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Keep in step with MANIFEST.in (the sdist) and imagebatch_cli.project.APPLICATION_FILES;
# tests/integration/test_packaging.py builds the wheel and checks every file the template names.
APPLICATION = (
    "template.yaml",
    "samconfig.toml",
    "statemachine/*.asl.json",
    "functions/*/*.py",
    "functions/*/requirements.txt",
    "events/manifests/*.jsonl",
    "events/manifests/*.csv",
)
PACKAGED_AS = Path("imagebatch_cli") / "application"


class BuildPyWithApplication(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for pattern in APPLICATION:
            for source in sorted(ROOT.glob(pattern)):
                target = Path(self.build_lib) / PACKAGED_AS / source.relative_to(ROOT)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithApplication})
