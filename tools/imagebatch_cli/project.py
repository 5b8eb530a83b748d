"""Where the SAM application and the sample manifests are: found from the CLI's own files.

`imagebatch local run` runs template.yaml, statemachine/ and functions/ on this machine, and
`--sample` names a manifest under events/manifests/. All of them are looked up from where the
`imagebatch_cli` package itself lives (the repository it is installed from, `pip install -e`),
never from the working directory: the only path a command takes from the working directory
is one the user typed (a manifest, `--out`).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# tools/imagebatch_cli/project.py -> the repository root
_SOURCE_ROOT = _PACKAGE_DIR.parents[1]
APPLICATION_FILES = ("template.yaml", "statemachine/batch.asl.json", "functions")
SAMPLES_DIR = Path("events") / "manifests"
SAMPLE_SUFFIXES = (".jsonl", ".csv")


class ProjectFilesNotFound(Exception):
    """The application files are not next to the installed CLI."""


def project_root(start: Path = _SOURCE_ROOT) -> Path:
    """The repository that holds the SAM application this CLI belongs to."""
    if all((start / name).exists() for name in APPLICATION_FILES):
        return start
    raise ProjectFilesNotFound(
        f"imagebatch cannot find its SAM application (template.yaml, statemachine/, functions/) "
        f"in {start}: install the CLI from the repository (`pip install -e <repository>`) or "
        "pass --template <repository>/template.yaml"
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
