"""`imagebatch prices refresh`: the data files' prices read again from the AWS Price List API
(pricing:GetProducts) and each catalogue model's lifecycle from bedrock:ListFoundationModels.

Without --write it prints what it found and what would change; with --write it rewrites
src/imagebatch/data/aws_prices.json and bedrock_models.json in place (source, date and
`confirmed_by` on every price it confirmed; everything else as it was). The files checked in
keep working offline: nothing reads the Price List at run time.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imagebatch_cli.exit_codes import fail

if TYPE_CHECKING:
    from imagebatch.costs.price_refresh import RefreshLine


def _data_dir() -> Path:
    """The package's data folder: in a source checkout, the files under git."""
    import imagebatch

    return Path(imagebatch.__file__).parent / "data"


def refresh(
    region: Annotated[
        str | None,
        typer.Option(
            help="Only this region's prices (default: every region aws_prices.json holds); "
            "Bedrock's model list is read here too (default: the session's region).",
            show_default=False,
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Rewrite the data files (default: only report).")
    ] = False,
) -> None:
    """Read the AWS Price List for the prices the data files hold; --write rewrites them."""
    from imagebatch.costs.price_refresh import dump_aws_prices, dump_bedrock_models
    from imagebatch_cli.views.console import console
    from imagebatch_cli.views.reconcile import refresh_table

    today = datetime.now(UTC).date()
    data = _data_dir()
    prices: dict[str, Any] = json.loads((data / "aws_prices.json").read_text("utf-8"))
    models: dict[str, Any] = json.loads((data / "bedrock_models.json").read_text("utf-8"))
    if region and region not in prices["regions"]:
        fail(f"aws_prices.json holds no prices for {region}; known: {sorted(prices['regions'])}")
    lines = _refresh_documents(prices, models, region, today)
    console.print(refresh_table(lines, f"AWS Price List, {today}"))
    if not write:
        console.print("(nothing written: --write rewrites the data files)", markup=False)
        return
    (data / "aws_prices.json").write_text(dump_aws_prices(prices), "utf-8")
    (data / "bedrock_models.json").write_text(dump_bedrock_models(models), "utf-8")
    console.print(f"wrote {data / 'aws_prices.json'} and {data / 'bedrock_models.json'}")


def _refresh_documents(
    prices: dict[str, Any], models: dict[str, Any], region: str | None, today: date
) -> list[RefreshLine]:
    """Asks the Price List for each region's prices (`region`'s alone when given) and the
    Bedrock models', and Bedrock for their lifecycles; updates both documents in place."""
    from imagebatch.aws.price_list import PriceList, model_lifecycles
    from imagebatch.aws.session import aws_errors
    from imagebatch.costs.price_refresh import (
        BEDROCK_SERVICE_CODES,
        SERVICE_QUERIES,
        PriceListProduct,
        instance_query,
        refresh_aws_prices,
        refresh_bedrock_models,
    )
    from imagebatch_cli.settings import aws_session

    session = aws_session(region=region)
    price_list = PriceList(session.pricing())
    lines = []
    with aws_errors("AWS Price List GetProducts"):
        for name in [region] if region else list(prices["regions"]):
            answers: dict[str, list[PriceListProduct]] = {
                price: price_list.answer(query, name) for price, query in SERVICE_QUERIES.items()
            }
            for entry in prices["regions"][name]["sagemaker_instances"]:
                kind = entry["instance_type"]
                answers[kind] = price_list.answer(instance_query(kind), name)
            lines += refresh_aws_prices(prices, name, answers, today)
        models_region = region or session.region
        bedrock_products = [
            product
            for code in BEDROCK_SERVICE_CODES
            for product in price_list.products(code, models_region)
        ]
    with aws_errors("Bedrock ListFoundationModels"):
        lifecycles = model_lifecycles(aws_session(region=models_region).bedrock())
    return lines + refresh_bedrock_models(
        models, models_region, bedrock_products, lifecycles, today
    )
