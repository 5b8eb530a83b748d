"""The options every command shares (`imagebatch --profile P --region R COMMAND`), set once by
the app's callback and read by the commands that talk to AWS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagebatch.aws.session import AwsSession


@dataclass
class GlobalOptions:
    profile: str | None = None
    region: str | None = None


current = GlobalOptions()


def set_global_options(profile: str | None, region: str | None) -> None:
    current.profile = profile
    current.region = region


def aws_session(region: str | None = None, default_region: str | None = None) -> AwsSession:
    """A session with --profile and --region (a command's own --region wins); without any,
    `default_region` (samconfig.toml's) is used."""
    from imagebatch.aws.session import AwsSession

    return AwsSession(
        profile=current.profile, region=region or current.region, default_region=default_region
    )
