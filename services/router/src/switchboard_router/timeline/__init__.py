"""Stage package: replaced by the stage's implementation (see services/router/README.md)."""

from switchboard_router.stage import RouterContext, StageParts


def wire(ctx: RouterContext) -> StageParts:
    """Wire this stage's consumers, publishers and routes on the shared clients."""
    del ctx
    return StageParts()
