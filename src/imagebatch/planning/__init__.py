"""Planning: what a manifest becomes before anything is written or started. Pure domain (no
AWS calls, nothing of `aws/`): ingest runs it on the deployed stack, and `imagebatch
validate`/`estimate` run the same code on the stack the template would deploy, so what they
show is what ingest would do.

    stack_options  DeployedOptions: the options a deployed stack gives (chunking, ceilings,
                   prices, the SageMaker endpoint), from the ingest function's settings
    routing        one item's route (backends/routing.py holds the rule), its images, seeds
    pricing        expected micro-dollars per image on each backend
    plan           BatchPlan of PlannedChunks: one streaming pass that checks, routes, prices
                   and spools chunk files
    reuse          the images the image index already holds, left out of the estimate
    verdict        assess: the estimate by category and why ingest would refuse (a Verdict)
    what_if        plan_for_stack: the plan on a stack, as ingest and the CLI both run it
"""
