"""The ``surveys`` section of the routing policy: which resolved conversations get a
CSAT or NPS survey, after how long, what it says and how long an answer counts. Its own
module, like ``acknowledgements``, because the policy file (assignment) and the timeline,
which sends surveys and reads their answers, both read it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchboard_common.contract import Channel, FeedbackKind


class Surveys(BaseModel):
    """One survey per resolved conversation on ``channels``, ``delay_seconds`` after the
    resolution if it is still resolved then; the customer's next message within
    ``answer_window_seconds`` that is a score is their rating."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FeedbackKind
    channels: list[Channel] = Field(min_length=1)
    #: Time after the resolution before the survey goes (a reopening in it cancels it).
    delay_seconds: Annotated[float, Field(ge=0, le=30 * 24 * 3600)] = 3600
    #: What the customer is asked; ``{reference}`` is replaced by the conversation's id.
    #: Checked at start against each channel's text limit.
    text: Annotated[str, Field(min_length=1, max_length=4000)]
    #: How long after the survey went a score still counts as its answer.
    answer_window_seconds: Annotated[float, Field(gt=0, le=30 * 24 * 3600)] = 3 * 24 * 3600

    @model_validator(mode="after")
    def _text_placeholders(self) -> Surveys:
        try:
            self.text.format(reference="c-1")
        except (KeyError, IndexError, ValueError):
            raise ValueError("text may use {reference} only (write {{ and }} for braces)") from None
        return self
