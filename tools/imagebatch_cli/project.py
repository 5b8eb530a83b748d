"""Where the SAM application and the sample manifests are: found from the CLI's own files.

`imagebatch local run` runs template.yaml, statemachine/ and functions/, and `--sample` names
a manifest under events/manifests/. They are looked up where the `imagebatch_cli` package
itself lives: the repository it is installed from (`pip install -e`), else the copy a wheel
carries in imagebatch_cli/application/ (setup.py puts it there); never the working
directory: the only path a command takes from the working directory is one the user typed
(a manifest, `--out`).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# tools/imagebatch_cli/project.py -> the repository root
_SOURCE_ROOT = _PACKAGE_DIR.parents[1]
# a wheel's copy of the application (setup.py's build step)
PACKAGED_ROOT = _PACKAGE_DIR / "application"
APPLICATION_FILES = ("template.yaml", "statemachine/batch.asl.json", "functions")
SAMPLES_DIR = Path("events") / "manifests"
SAMPLE_SUFFIXES = (".jsonl", ".csv")


class ProjectFilesNotFound(Exception):
    """The application files are not next to the installed CLI."""


def project_root(start: Path | None = None) -> Path:
    """The SAM application this CLI belongs to: `start` if given, else the repository the CLI
    is installed from, else the copy its wheel carries."""
    candidates = [start] if start is not None else [_SOURCE_ROOT, PACKAGED_ROOT]
    for candidate in candidates:
        if all((candidate / name).exists() for name in APPLICATION_FILES):
            return candidate
    raise ProjectFilesNotFound(
        f"imagebatch cannot find its SAM application (template.yaml, statemachine/, functions/) "
        f"in {' or '.join(str(c) for c in candidates)}: reinstall the CLI (`pip install "
        "<repository>` or `pip install -e <repository>`) or pass --template "
        "<repository>/template.yaml"
    )


def template_path(given: Path | None = None) -> Path:
    """`--template` when given (as typed, made absolute), else the project's template.yaml."""
    if given is not None:
        return given.resolve()
    return project_root() / "template.yaml"


def sample_names(root: Path | None = None) -> list[str]:
    """The sample manifests, by name: `demo` for demo.jsonl, `demo.csv` for demo.csv."""
    folder = (root or project_root()) / SAMPLES_DIR
    names = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl":
            names.append(path.stem)
        elif path.suffix in SAMPLE_SUFFIXES:
            names.append(path.name)
    return names


def sample_manifest(name: str, root: Path | None = None) -> Path:
    """The sample manifest called `name` (`demo`, `demo.jsonl` or `demo.csv`)."""
    folder = (root or project_root()) / SAMPLES_DIR
    candidates = [folder / name] if Path(name).suffix else [folder / f"{name}.jsonl"]
    for candidate in candidates:
        if candidate.suffix in SAMPLE_SUFFIXES and candidate.is_file() and "/" not in name:
            return candidate
    raise ProjectFilesNotFound(
        f"no sample manifest {name!r}; samples: {', '.join(sample_names(root))}"
    )
