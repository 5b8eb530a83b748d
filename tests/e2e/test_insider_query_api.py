"""The insider at the query API (issue 19): API Gateway's IAM authorization lets a signed
request through only if its principal is allowed execute-api:Invoke on the route's ARN
(arn:aws:execute-api:region:account:api-id/stage/METHOD/path), else 403; with
QueryTenancy=true a caller allowed in reads only the batches of the teams its principal tag
imagebatch:team names. The local query API (`local up`'s server) decides both with the local
IAM check and the stack's QueryFunction, for whichever principal signed the request."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from imagebatch_local.cloud.insider import (
    INSIDER,
    INSIDER_ACCESS_KEY,
    INSIDER_ROLE_NAME,
    INSIDER_SECRET_KEY,
    insider_role,
)
from imagebatch_local.cloud.local_up import ApiCaller, LocalQueryApiServer
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from imagebatch_local.template import ACCOUNT_ID

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
MODEL = "stability.sd3-5-large-v1:0"
#: A principal of the account like the insider, less execute-api:Invoke.
READER = "Reader"
READER_KEY = "reader-without-api"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        renderer="null",
        parameter_overrides={"QueryTenancy": "true"},
        region=REGION,
    )
    with local_aws(options) as running:
        yield running


def _batch(aws: LocalAws, tmp: Path, team: str) -> str:
    header = {"batch": {"backend": "bedrock", "model": MODEL, "tags": {"team": team}}}
    item = {"id": f"{team}-mug", "prompt": f"a {team} mug", "width": 1024, "height": 1024}
    path = tmp / f"{team}.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(item) + "\n", encoding="utf-8")
    batch_id = aws.upload_manifest(path)
    aws.wait_for_batch(batch_id, timeout_s=600)
    return batch_id


@pytest.fixture(scope="module")
def batches(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # The insider's role names team red; a batch of each team runs.
    aws.client("iam").tag_role(
        RoleName=INSIDER_ROLE_NAME, Tags=[{"Key": "imagebatch:team", "Value": "red"}]
    )
    tmp = tmp_path_factory.mktemp("manifests")
    return {team: _batch(aws, tmp, team) for team in ("red", "blue")}


@pytest.fixture(scope="module")
def api(aws: LocalAws) -> Iterator[LocalQueryApiServer]:
    reader = dataclasses.replace(
        insider_role().without("execute-api:Invoke"), owner=READER, name="reader"
    )
    aws.iam.outsiders[READER] = reader
    callers = {READER_KEY: ApiCaller(reader.assumed_role_arn(ACCOUNT_ID), READER_KEY, READER)}
    server = LocalQueryApiServer(aws, extra_callers=callers)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _get(api: LocalQueryApiServer, path: str, access_key: str, secret_key: str) -> tuple[int, Any]:
    """GET `path`, signed with SigV4 for execute-api as boto3 signs (the CLI's query client)."""
    url = f"{api.url}{path}"
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(access_key, secret_key), "execute-api", REGION).add_auth(request)
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()), method="GET")
    try:
        with urllib.request.urlopen(prepared, timeout=60) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return int(refused.code), json.loads(refused.read())


def test_the_insider_reads_its_teams_batch_and_not_another_teams(
    aws: LocalAws, api: LocalQueryApiServer, batches: dict[str, str]
) -> None:
    status, own = _get(api, f"/batches/{batches['red']}", INSIDER_ACCESS_KEY, INSIDER_SECRET_KEY)
    assert status == 200, own
    status, other = _get(api, f"/batches/{batches['blue']}", INSIDER_ACCESS_KEY, INSIDER_SECRET_KEY)
    # another team's batch is answered as one that does not exist
    assert status == 404, other
    status, listing = _get(api, "/batches", INSIDER_ACCESS_KEY, INSIDER_SECRET_KEY)
    assert status == 200
    listed = {b["batch_id"] for b in listing["batches"]}
    assert batches["red"] in listed and batches["blue"] not in listed
    # allowed: execute-api:Invoke on "*" covers every route, so nothing was refused
    assert not [d for d in aws.iam.outsider_denials if d.owner == INSIDER]


def test_a_principal_without_execute_api_invoke_gets_403(
    aws: LocalAws, api: LocalQueryApiServer, batches: dict[str, str]
) -> None:
    status, body = _get(api, f"/batches/{batches['red']}", READER_KEY, READER_KEY)
    assert (status, body) == (403, {"message": "Forbidden"})
    refused = [d for d in aws.iam.outsider_denials if d.owner == READER]
    route = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{api.api_id}/$default/GET/batches/"
    assert [(d.action, d.resource) for d in refused] == [
        ("execute-api:Invoke", route + batches["red"])
    ]


def test_an_unknown_access_key_is_refused_before_any_policy(
    aws: LocalAws, api: LocalQueryApiServer
) -> None:
    status, body = _get(api, "/batches", "AKIAUNKNOWN", "x")
    assert status == 403
    assert body == {"message": "The security token included in the request is invalid."}
