"""The verdict on a plan: its estimate by category and why ingest would refuse it. It reads
the plan and returns a Verdict; the plan is not changed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from imagebatch.costs.estimate import BatchEstimate, estimate_batch
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.sagemaker_path import SageMakerPath, estimate_mixed_batch
from imagebatch.costs.usage import tags_bytes
from imagebatch.models.money import MICRO, format_usd
from imagebatch.planning.plan import BatchPlan
from imagebatch.planning.stack_options import DeployedOptions


@dataclass(frozen=True)
class Verdict:
    """What ingest decides before it writes anything about one plan."""

    estimate: BatchEstimate
    # Why the batch is refused; None: it runs.
    rejection: str | None


def assess(plan: BatchPlan, stack: DeployedOptions, prices: RegionPrices) -> Verdict:
    """The estimate by category and the rejection reason. `imagebatch validate` and
    `estimate` call this too (after plan_for_stack), so their verdict is ingest's."""
    estimate = estimate_plan(plan, stack, prices)
    return Verdict(
        estimate=estimate,
        rejection=rejection_reason(
            plan,
            estimate=estimate,
            sagemaker_deployed=stack.deployment is not None or stack.sagemaker_unpriced,
            sagemaker_priced=not stack.sagemaker_unpriced,
            max_images=stack.limits.max_images_per_batch,
        ),
    )


def estimate_plan(plan: BatchPlan, stack: DeployedOptions, prices: RegionPrices) -> BatchEstimate:
    sizes = [chunk.images for chunk in plan.chunks]
    # the summary and every rollup carry the batch's tags: each of their writes grows with them
    tag_bytes = tags_bytes(plan.settings.tags)
    if not any(chunk.backend == "sagemaker" for chunk in plan.chunks):
        return estimate_batch(
            plan.estimate_inference_micro_usd, sizes, prices, stack.shape, tag_bytes
        )
    return estimate_mixed_batch(
        plan.inference_exact,
        [chunk.images for chunk in plan.chunks if chunk.backend == "bedrock"],
        [(chunk.images, chunk.shapes) for chunk in plan.chunks if chunk.backend == "sagemaker"],
        prices,
        stack.shape,
        path=stack.deployment.path if stack.deployment else SageMakerPath(),
        capped=plan.settings.max_cost_usd is not None,
        pixels=plan.pixels_total // max(1, plan.images_total),
        tag_bytes=tag_bytes,
    )


def rejection_reason(
    plan: BatchPlan,
    *,
    estimate: BatchEstimate | None = None,
    sagemaker_deployed: bool = False,
    sagemaker_priced: bool = True,
    max_images: int | None = None,
) -> str | None:
    """Why ingest refuses the plan (None: it runs); without `estimate`, the cap is checked
    against the plan's inference alone. `max_images`: the stack's MaxImagesPerBatch."""
    settings = plan.settings
    if plan.invalid_lines and settings.on_invalid == "reject":
        return (
            f"{plan.invalid_lines} invalid line(s) and on_invalid is 'reject': nothing runs; "
            "see errors.jsonl, fix the lines or set on_invalid to 'skip'"
        )
    if plan.images_total == 0:
        return "no valid items: nothing to generate"
    if max_images is not None and plan.images_total > max_images:
        return (
            f"{plan.images_total} images is more than this stack's MaxImagesPerBatch "
            f"{max_images}: nothing was spent; split the manifest"
        )
    if settings.backend == "sagemaker" and not sagemaker_deployed:
        return "backend 'sagemaker' is not deployed in this stack yet; use 'bedrock' or 'auto'"
    if settings.backend == "sagemaker" and not sagemaker_priced:
        return (
            "backend 'sagemaker': src/imagebatch/data/aws_prices.json has no price for the "
            "endpoint's instance type in this region, so its images cannot be charged; "
            "use 'bedrock'"
        )
    return _cap_refusal(plan, estimate, settings.max_cost_usd)


def _cap_refusal(
    plan: BatchPlan, estimate: BatchEstimate | None, max_cost_usd: Decimal | None
) -> str | None:
    """Why max_cost_usd refuses the plan: the estimate, the reserve and, when the batch
    would wake the endpoint from zero, the wake (None: it fits, or there is no cap)."""
    if max_cost_usd is None:
        return None
    cap = int(max_cost_usd * MICRO)
    total = estimate.total_micro_usd if estimate else plan.estimate_inference_micro_usd
    reserve = estimate.overhead_reserve_micro_usd if estimate else 0
    wake = plan.endpoint_wake_micro_usd
    if wake and total + reserve + wake > cap:
        return _wake_refusal(plan, total=total + reserve, wake=wake)
    if total + reserve > cap:
        detail = (
            f" (inference {format_usd(estimate.inference_micro_usd, grouped=False)}, "
            f"orchestration {format_usd(estimate.orchestration_micro_usd, grouped=False)}, "
            f"storage {format_usd(estimate.storage_micro_usd, grouped=False)}; plus "
            f"{format_usd(reserve, grouped=False)} held back so chunks refused for budget "
            "can still be recorded)"
            if estimate
            else ""
        )
        return (
            f"estimated cost {format_usd(total, grouped=False)} for {plan.images_total} "
            f"images{detail} "
            f"exceeds max_cost_usd ${max_cost_usd}: nothing was spent; raise "
            "max_cost_usd or split the manifest"
        )
    return None


def _wake_refusal(plan: BatchPlan, *, total: int, wake: int) -> str:
    """One line: the batch would wake the endpoint from zero, and the wake (held at
    admission: the batch that wakes the endpoint pays for its cold start and idle tail) does
    not fit the cap with the estimate."""
    backend = f"backend '{plan.settings.backend}'"
    return (
        f"{backend} wakes the endpoint from zero: its cold start and idle tail cost "
        f"{format_usd(wake, grouped=False)}, which with the estimate "
        f"{format_usd(total, grouped=False)} for {plan.images_total} images exceeds "
        f"max_cost_usd ${plan.settings.max_cost_usd} (needs "
        f"{format_usd(total + wake, grouped=False)}): nothing was spent; raise max_cost_usd, "
        "use 'bedrock', or run when the endpoint is warm"
    )
